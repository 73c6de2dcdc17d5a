// Renders the topographic maps of one snapshot in the browser (body of a Bokeh CustomJS callback; the page also
// runs it once when the document is ready, which draws the maps for the first time).
//
// Each map tile owns an image source (one H x W float32 image, row 0 at the bottom) and a column of the layer's
// points source (neuron positions x, y, neuron; the tile's column tile_col, float32, feeds its hover tooltip). Neuron values of the shown
// snapshots live in value sources (column "v", shape (S, G, N)): either float32 values, or 8-bit codes stored as
// differences from the previous snapshot (modulo 256), decoded as value = low + code * step, code 255 = NaN
// (vq[source] = [low, step, 1]; [0, 0, 0] for float32; see quantize.py). The interpolation operator of a layer
// lives in an operator source (columns "pixel" (P,), "neurons" (P, K), "weights" (P, K)). A frame is
//     img[pixel[p]] = sum_k u[neurons[p, k]] * weights[p, k],   u[n] = v[s, g, n] - c[n]
// where c = 0, or, in the contrast view of the activation maps, c[n] = the mean of v[s, :, n] over the groups
// that are not empty (the reference study's contrast normalisation). Every other pixel is NaN (outside the
// layout's region, drawn transparent), except, for a layer with an outline (op_outlined), the halo: the pixels
// next to the region (8-neighbourhood) take the value of a neighbour inside it, so that the region's partly
// covered edge pixels are painted; the off-map mask (light grey, a patch that leaves out exactly the region) and
// the outline are drawn over them, which makes the edge smooth instead of a staircase.
//
// Args (all tile_* lists are indexed by map tile):
//   slider, layer_select (or null), label (Div), play (Toggle), mode (RadioButtonGroup or null: 0 = mean
//   activation, 1 = contrast), measure_select (Select or null: the confidence measure of the correlation maps),
//   steps, epochs, snap_no: per shown snapshot (slider position) its step, epoch and 1-based number among the
//   run's n_total snapshots, for the label; keep_step: take the step to open at from the address (#step=N, the
//   nearest shown snapshot) and write the shown step into the links of class tt-keepstep;
//   imgs, pts, tile_col: the tiles' image sources, points sources and value columns in them; vsrc, vq, tile_vals, tile_group: value sources, how each is decoded, and
//   each tile's (source, group); a correlation tile (tile_kind 2) reads source tile_vals + the selected
//   measure's position;
//   osrc, tile_op: operator sources and each tile's operator; op_outlined: per operator, 1 when its layer's
//   tiles draw the off-map mask and outline (then the halo is filled); tile_layer: each tile's layer position;
//   tile_kind: 0 activation map that can show contrast, 1 other activation map, 2 correlation map;
//   tile_title, tile_name, tile_counts, csrc: title models, group names and (index into csrc, column "c" of
//   shape (S, G), or -1) sample counts written into the title;
//   panels: per layer position, the layout models shown only while that layer is selected;
//   tam_mappers, tam_scale ([low, high, contrast limit, sequential?]), tam_bars, tam_hovers, tam_tips (per
//   hover, its tooltips for mean activation and for contrast), pal_div, pal_seq: what the contrast switch
//   changes; corr_bars, corr_bar_texts: colour-bar titles per measure;
//   corr_scale (RadioButtonGroup or null: 0 = scale +-1, 1 = fit to data), corr_mappers, corr_heads: per layer
//   with correlation maps, its colour mapper and heading Div; corr_fit: per such layer, the fit limit per
//   measure; corr_head_texts: per such layer, the heading for +-1 followed by the fit heading per measure;
//   dormant: per layer position, [marker source (x, y), mask source (column "m", uint8 of shape (S, N))] or
//   null: the tau-dormant units of the shown snapshot, drawn as hollow circles;
//   markers, marker_x: the current-snapshot Spans of the charts over training time and each shown snapshot's x
//   position on them (step, or step + 1 on a log axis);
//   view_switch: the map size callback (map_size.js; not used here: held so that the root of the time slider
//   holds it, and its switches reach it through map_relay.js).
const w = window;
if (w.topotraceCodes === undefined) w.topotraceCodes = new Map();  // value source id -> decoded codes and table
if (w.topotraceHalo === undefined) w.topotraceHalo = new Map();    // operator source id -> [halo pixels, sources]
if (w.topotraceRender === undefined || w.topotraceRender.owner !== slider.id) {
  // The values of source vi: [array of shape (S, G, N), table code -> value (null for float32 values)].
  const source = function (vi) {
    const vals = vsrc[vi].data.v;
    const [low, step, delta] = vq[vi];
    if (step === 0) return [vals, null];
    let got = w.topotraceCodes.get(vsrc[vi].id);
    if (got === undefined || got[2] !== vals) {
      const row = vals.shape[1] * vals.shape[2];
      let codes = vals;
      if (delta) {                                       // running sum over snapshots, modulo 256
        codes = new Uint8Array(vals.length);
        for (let i = 0; i < vals.length; i++) codes[i] = i < row ? vals[i] : (codes[i - row] + vals[i]) & 255;
      }
      const table = new Float32Array(256);
      for (let c = 0; c < 255; c++) table[c] = low + c * step;
      table[255] = NaN;
      got = [codes, table, vals];
      w.topotraceCodes.set(vsrc[vi].id, got);
    }
    return [got[0], got[1]];
  };
  // The halo of operator oi on an H x W image: [pixels outside the region next to it, a neighbour inside each].
  const halo = function (oi, H, W) {
    let got = w.topotraceHalo.get(osrc[oi].id);
    if (got === undefined) {
      const pixel = osrc[oi].data.pixel;
      const inside = new Uint8Array(H * W);
      for (let p = 0; p < pixel.length; p++) inside[pixel[p]] = 1;
      const near = [[0, -1], [0, 1], [-1, 0], [1, 0], [-1, -1], [-1, 1], [1, -1], [1, 1]];  // [dy, dx]
      const dst = [], src = [];
      for (let y = 0; y < H; y++) {
        for (let x = 0; x < W; x++) {
          if (inside[y * W + x]) continue;
          for (const [dy, dx] of near) {
            const yy = y + dy, xx = x + dx;
            if (yy >= 0 && yy < H && xx >= 0 && xx < W && inside[yy * W + xx]) {
              dst.push(y * W + x); src.push(yy * W + xx); break;
            }
          }
        }
      }
      got = [Int32Array.from(dst), Int32Array.from(src)];
      w.topotraceHalo.set(osrc[oi].id, got);
    }
    return got;
  };
  const render = function (s) {
    const t0 = performance.now();
    const layer = layer_select === null ? 0 : Math.max(0, layer_select.options.indexOf(layer_select.value));
    const contrast = mode !== null && mode.active === 1;
    const meas = measure_select === null ? 0 : Math.max(0, measure_select.options.indexOf(measure_select.value));
    const means = {};
    const touched = [];
    for (let m = 0; m < imgs.length; m++) {
      if (tile_layer[m] !== layer) continue;
      const vi = tile_vals[m] + (tile_kind[m] === 2 ? meas : 0);
      const [vals, table] = source(vi);                  // flat, shape (S, G, N)
      const shape = vsrc[vi].data.v.shape;
      const G = shape[1], N = shape[2];
      const base = (s * G + tile_group[m]) * N;
      const u = new Float32Array(N);                     // the neuron values drawn
      if (table === null) { for (let n = 0; n < N; n++) u[n] = vals[base + n]; }
      else { for (let n = 0; n < N; n++) u[n] = table[vals[base + n]]; }
      if (contrast && tile_kind[m] === 0) {
        let sub = means[vi];
        if (sub === undefined) {                         // mean over the non-empty groups, per neuron
          sub = new Float32Array(N);
          const cnt = new Int32Array(N);
          for (let g = 0; g < G; g++) {
            const b = (s * G + g) * N;
            for (let n = 0; n < N; n++) {
              const x = table === null ? vals[b + n] : table[vals[b + n]];
              if (x === x) { sub[n] += x; cnt[n]++; }
            }
          }
          for (let n = 0; n < N; n++) sub[n] = cnt[n] > 0 ? sub[n] / cnt[n] : NaN;
          means[vi] = sub;
        }
        for (let n = 0; n < N; n++) u[n] -= sub[n];
      }
      const op = osrc[tile_op[m]].data;
      const pixel = op.pixel, nb = op.neurons, wt = op.weights;
      const K = nb.shape[1];
      const img = imgs[m].data.image[0];
      img.fill(NaN);
      for (let p = 0, q = 0; p < pixel.length; p++) {
        let acc = 0.0;
        for (let k = 0; k < K; k++, q++) acc += u[nb[q]] * wt[q];
        img[pixel[p]] = acc;
      }
      if (op_outlined[tile_op[m]]) {                     // the halo under the off-map mask
        const [dst, src] = halo(tile_op[m], img.shape[0], img.shape[1]);
        for (let i = 0; i < dst.length; i++) img[dst[i]] = img[src[i]];
      }
      // Hover values change in place without a change event: the tooltip reads them when it shows, and the
      // dots (which never move) are not redrawn or re-indexed.
      pts[m].data[tile_col[m]].set(u);
      if (tile_counts[m] >= 0) {
        const c = csrc[tile_counts[m]].data.c;
        const text = tile_name[m] + " (n = " + c[s * G + tile_group[m]] + ")";
        if (tile_title[m].text !== text) tile_title[m].text = text;
      }
      touched.push(imgs[m]);
    }
    for (const src of touched) src.change.emit();
    if (dormant[layer] !== null) {                       // the layer's tau-dormant units: hollow circles
      const [marks, masks] = dormant[layer];
      const mk = masks.data.m, N = mk.shape[1], at = Math.min(s, mk.shape[0] - 1) * N;
      const pos = pts[tile_layer.indexOf(layer)].data;   // the layer's neuron positions
      const xs = pos.x, ys = pos.y;
      const x = [], y = [];
      for (let n = 0; n < N; n++) if (mk[at + n]) { x.push(xs[n]); y.push(ys[n]); }
      marks.data = {x: new Float32Array(x), y: new Float32Array(y)};
    }
    const i = Math.min(s, steps.length - 1);
    label.text = "<span class='tt-steplabel'>step " + steps[i].toLocaleString("en-US") + " \u00b7 epoch " +
                 epochs[i] + " \u00b7 snapshot " + snap_no[i] + " of " + n_total + "</span>";
    if (keep_step) {                                     // the other layer pages open at this step
      w.topotraceStep = steps[i];
      for (const a of document.querySelectorAll("a.tt-keepstep")) {
        a.href = a.getAttribute("href").split("#")[0] + "#step=" + steps[i];
      }
    }
    // The markers follow once the maps have painted, and a newer frame cancels a pending move. They are on the
    // charts' overlay level, so a move repaints a chart's overlay canvas only (on the primary level it repainted
    // every chart's lines, axes and labels: some 1.1 s of main-thread work per move on the default report).
    if (markers.length > 0) {
      const later = w.requestIdleCallback !== undefined ? (f) => w.requestIdleCallback(f, {timeout: 150})
                                                          : (f) => w.setTimeout(f, 0);
      const cancel = w.cancelIdleCallback !== undefined ? w.cancelIdleCallback.bind(w) : w.clearTimeout.bind(w);
      if (w.topotraceMarkerJob !== undefined) cancel(w.topotraceMarkerJob);
      const x = marker_x[i];
      w.topotraceMarkerJob = later(function () {
        w.topotraceMarkerJob = undefined;
        for (const span of markers) span.location = x;
      });
    }
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
  if (mode !== null && cb_obj === mode) {
    const contrast = mode.active === 1;
    for (let i = 0; i < tam_mappers.length; i++) {
      const [low, high, climit, seq] = tam_scale[i];
      const mapper = tam_mappers[i];
      mapper.palette = contrast ? pal_div : (seq ? pal_seq : pal_div);
      mapper.low = contrast ? -climit : low;
      mapper.high = contrast ? climit : high;
      tam_bars[i].title = contrast ? "contrast: mean activation minus the mean over the groups" : "mean activation";
    }
    for (let i = 0; i < tam_hovers.length; i++) tam_hovers[i].tooltips = tam_tips[i][contrast ? 1 : 0];
  }
  if (measure_select !== null && cb_obj === measure_select) {
    const k = Math.max(0, measure_select.options.indexOf(measure_select.value));
    for (const bar of corr_bars) bar.title = corr_bar_texts[k];
  }
  if (corr_scale !== null && (cb_obj === corr_scale || cb_obj === measure_select)) {
    const k = measure_select === null ? 0 : Math.max(0, measure_select.options.indexOf(measure_select.value));
    const fit = corr_scale.active === 1;
    for (let i = 0; i < corr_mappers.length; i++) {
      const lim = fit ? corr_fit[i][k] : 1.0;
      corr_mappers[i].low = -lim;
      corr_mappers[i].high = lim;
      corr_heads[i].text = corr_head_texts[i][fit ? 1 + k : 0];
    }
  }
  if (layer_select !== null && cb_obj === layer_select) {
    const layer = layer_select.options.indexOf(layer_select.value);
    for (let l = 0; l < panels.length; l++) {
      for (const model of panels[l]) model.visible = (l === layer);
    }
  }
  let s = slider.value;
  // Called by none of the widgets: the document is ready (the page has just opened).
  const ready = ![slider, play, mode, measure_select, layer_select, corr_scale].includes(cb_obj);
  // The address picks the layer (#layer=NAME, a page of several layers) and the step (#step=N, the nearest shown
  // snapshot): when the page opens from another page, and when only the address's # part changes later.
  const from_address = function () {
    const hash = window.location.hash;
    const named = /[#&]layer=([^&]*)/.exec(hash);
    const layer = named === null ? null : decodeURIComponent(named[1]);
    if (layer_select !== null && layer !== null && layer !== layer_select.value && layer_select.options.includes(layer)) {
      layer_select.value = layer;                        // its change shows that layer's panels
    }
    const want = /[#&]step=(-?\d+)/.exec(hash);
    if (want === null) return null;
    const step = Number(want[1]);
    let best = 0;
    for (let k = 1; k < steps.length; k++) if (Math.abs(steps[k] - step) < Math.abs(steps[best] - step)) best = k;
    if (slider.value !== best) slider.value = best;      // its change runs this callback, which draws the maps
    return best;
  };
  if (keep_step && ready) {
    const best = from_address();
    if (best !== null) s = best;
    if (w.topotraceHashHook !== slider.id) {
      w.topotraceHashHook = slider.id;
      w.addEventListener("hashchange", from_address);
    }
  }
  w.topotraceRender(s);
}
