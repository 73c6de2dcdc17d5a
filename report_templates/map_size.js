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
  // Sizes are set silently, then one loud change per grid lays its section out once (BokehJS lays out the whole
  // section at every loud size change: one per tile took seconds). That change is the grid's new columns or, where
  // they stay, its colour bar's new width.
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
    const same = grids[g].children.every(([, r, c], i) => r === cells[i][1] && c === cells[i][2]);
    bar_fig.setv({width: bw}, {silent: !same});
    if (!same) grids[g].children = cells;
  }
}
