// The map size switch and the neuron-dots switch (body of a Bokeh CustomJS callback, see maps.py: _map_view).
//
// Args: size (RadioButtonGroup: 0 = small, 1 = large tiles), dots (Toggle), px ([small, large] tile width in CSS
// pixels), max_width (CSS pixels a grid may take), and per grid of tiles: grids (GridPlot), grid_tiles (its tile
// figures in order), grid_shape ([columns at the small size, height / width of a map]), grid_bars ([colour-bar
// figure, colour bar]); per tile: dot_glyphs (the dots' glyph) and dot_alpha (their line alpha when shown; a hidden
// dot has alpha 0 and stays hoverable).
if (cb_obj === dots) {
  for (let i = 0; i < dot_glyphs.length; i++) dot_glyphs[i].line_alpha = {value: dots.active ? dot_alpha[i] : 0.0};
} else {
  // Every size is set silently and each grid then lays its root out once: a loud size change re-lays out the whole
  // root at once, and one per tile took seconds on a page of a few dozen tiles. A grid's new columns lay it out;
  // where they stay as they are, its colour bar's new width does.
  const w = px[size.active === 1 ? 1 : 0];
  for (let g = 0; g < grids.length; g++) {
    const [ncols_small, aspect] = grid_shape[g];
    const tiles = grid_tiles[g];
    const ncols = Math.max(1, Math.min(ncols_small, Math.floor(max_width / w)));
    const h = Math.max(120, Math.floor(w * aspect) + 24);   // as _tile_height
    for (const fig of tiles) fig.setv({width: w, height: h}, {silent: true});
    const [bar_fig, bar] = grid_bars[g];
    const bw = Math.min(ncols, tiles.length) * w;
    bar.setv({width: Math.max(bw - 40, 100)}, {silent: true});
    const cells = tiles.map((fig, i) => [fig, Math.floor(i / ncols), i % ncols]);
    const same = grids[g].children.every(([fig, r, c], i) => r === cells[i][1] && c === cells[i][2]);
    bar_fig.setv({width: bw}, {silent: !same});
    if (!same) grids[g].children = cells;
  }
}
