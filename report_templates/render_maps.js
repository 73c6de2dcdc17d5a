// Renders the topographic maps of one snapshot in the browser (body of a Bokeh CustomJS callback).
//
// Each map tile owns an image source (one H x W float32 image, row 0 at the bottom) and a points source
// (neuron positions; column "value", a float32 array, feeds the hover tooltip). Neuron values of every snapshot live in value
// sources (column "v", shape (S, G, N)); the interpolation operator of a layer lives in an operator source
// (columns "pixel" (P,), "neurons" (P, K), "weights" (P, K)). A frame is
//     img[pixel[p]] = sum_k v[s, g, neurons[p, k]] * weights[p, k]
// and every other pixel is NaN (outside the layout's region, drawn transparent).
//
// Args (all parallel lists are indexed by map tile):
//   slider, layer_select (or null), label (Div), play (Toggle),
//   steps, epochs: per-snapshot numbers for the label,
//   imgs, pts: the tiles' sources; vsrc, tile_vals, tile_group: value sources and each tile's (source, group);
//   osrc, tile_op: operator sources and each tile's operator; tile_layer: each tile's layer position;
//   panels: per layer position, the layout models shown only while that layer is selected.
const w = window;
if (w.topotraceRender === undefined || w.topotraceRender.owner !== slider.id) {
  const render = function (s) {
    const t0 = performance.now();
    const layer = layer_select === null ? 0 : Math.max(0, layer_select.options.indexOf(layer_select.value));
    const touched = [];
    for (let m = 0; m < imgs.length; m++) {
      if (tile_layer[m] !== layer) continue;
      const vals = vsrc[tile_vals[m]].data.v;            // flat float32, shape (S, G, N)
      const shape = vals.shape;
      const G = shape[1], N = shape[2];
      const base = (s * G + tile_group[m]) * N;
      const op = osrc[tile_op[m]].data;
      const pixel = op.pixel, nb = op.neurons, wt = op.weights;
      const K = nb.shape[1];
      const img = imgs[m].data.image[0];
      img.fill(NaN);
      for (let p = 0, q = 0; p < pixel.length; p++) {
        let acc = 0.0;
        for (let k = 0; k < K; k++, q++) acc += vals[base + nb[q]] * wt[q];
        img[pixel[p]] = acc;
      }
      // Hover values change in place without a change event: the tooltip reads them when it shows, and the
      // dots (which never move) are not redrawn or re-indexed.
      const pv = pts[m].data.value;
      for (let n = 0; n < N; n++) pv[n] = vals[base + n];
      touched.push(imgs[m]);
    }
    for (const src of touched) src.change.emit();
    const i = Math.min(s, steps.length - 1);
    label.text = "<span class='tt-steplabel'>step " + steps[i].toLocaleString("en-US") + " \u00b7 epoch " +
                 epochs[i] + " \u00b7 snapshot " + (i + 1) + " of " + steps.length + "</span>";
    w.topotraceFrameMs = performance.now() - t0;
    w.topotraceSnapshot = s;
    return w.topotraceFrameMs;
  };
  render.owner = slider.id;
  w.topotraceRender = render;
}

if (cb_obj === play) {
  if (play.active) {
    play.label = "\u275a\u275a Pause";
    if (slider.value >= slider.end) slider.value = slider.start;
    w.topotracePlayTimer = setInterval(function () {
      if (slider.value >= slider.end) { play.active = false; return; }
      slider.value = slider.value + 1;
    }, 250);
  } else {
    play.label = "\u25b6 Play";
    clearInterval(w.topotracePlayTimer);
  }
} else {
  if (layer_select !== null) {
    const layer = layer_select.options.indexOf(layer_select.value);
    for (let l = 0; l < panels.length; l++) {
      for (const model of panels[l]) model.visible = (l === layer);
    }
  }
  w.topotraceRender(slider.value);
}
