// The site index: sort by a column (a study moves with its seeds), filter rows, build the compare command.
(function () {
  "use strict";
  const table = document.getElementById("tt-runs");
  const groups = () => Array.from(table.tBodies);
  const value = (row, key) => row.cells[key + 1].dataset.v;
  let sorted = { key: -1, dir: 1 };

  table.tHead.querySelectorAll("th[data-key]").forEach((th) => {
    th.tabIndex = 0;
    const sort = () => {
      const key = Number(th.dataset.key);
      const num = th.dataset.type === "num";
      sorted = { key: key, dir: sorted.key === key ? -sorted.dir : (num ? -1 : 1) };
      const keyOf = (g) => value(g.rows[0], key);
      const cmp = (a, b) => {
        const x = keyOf(a), y = keyOf(b);
        if (num) {  // empty cells last, whatever the direction
          const fx = x === "" ? NaN : Number(x), fy = y === "" ? NaN : Number(y);
          if (isNaN(fx) || isNaN(fy)) return isNaN(fx) - isNaN(fy);
          return sorted.dir * (fx - fy);
        }
        return sorted.dir * x.localeCompare(y);
      };
      groups().sort(cmp).forEach((g) => table.appendChild(g));
      table.tHead.querySelectorAll("th").forEach((h) => h.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", sorted.dir > 0 ? "ascending" : "descending");
    };
    th.addEventListener("click", sort);
    th.addEventListener("keydown", (e) => { if (e.key === "Enter") sort(); });
  });

  const filter = document.getElementById("tt-filter");
  const count = document.getElementById("tt-count");
  const applyFilter = () => {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    let shown = 0;
    groups().forEach((g) => {  // a study is shown when it or one of its seeds matches
      const hit = Array.from(g.rows).some((r) => words.every((w) => r.textContent.toLowerCase().includes(w)));
      g.hidden = !hit;
      if (hit) shown += 1;
    });
    count.textContent = words.length ? shown + " of " + groups().length + " shown" : "";
  };
  filter.addEventListener("input", applyFilter);

  const root = table.dataset.root;
  const box = document.getElementById("tt-compare");
  const cmd = document.getElementById("tt-compare-cmd");
  const quote = (s) => (/^[\w.\/-]+$/.test(s) ? s : "'" + s.replace(/'/g, "'\\''") + "'");
  const picked = [];  // in the order ticked: the columns of the comparison
  table.addEventListener("change", (e) => {
    if (!e.target.classList.contains("tt-pick")) return;
    const path = quote(root + "/" + e.target.closest("tr").dataset.path);
    const at = picked.indexOf(path);
    if (e.target.checked && at < 0) picked.push(path);
    if (!e.target.checked && at >= 0) picked.splice(at, 1);
    box.hidden = picked.length < 2;
    cmd.textContent = "topotrace compare " + picked.join(" ");
  });
})();
