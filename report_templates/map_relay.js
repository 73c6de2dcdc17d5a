// Runs, for the widget that changed (cb_obj), the map callback it belongs to: the CustomJS named `target` (the
// render callback of maps.py, or the map size callback) whose arguments hold this widget. A widget placed in a root
// of its own (the contrast switch, the colour-scale switch, the measure selector, the map size and dots switches)
// holds only this small callback, found by name, and not the map callback itself: a root that held the map
// callback would reach every map model, and Bokeh walks the models of every root when it writes the page.
//
// Args: target (the callback's name).
let found = null;
for (const model of cb_obj.document.all_models) {
  if (model.name !== target || model.args === undefined) continue;
  const args = model.args instanceof Map ? [...model.args.values()] : Object.values(model.args);
  if (args.includes(cb_obj)) { found = model; break; }
}
if (found !== null) found.execute(cb_obj);
