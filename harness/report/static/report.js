// Sortable, filterable tables with a column toggle, and the Plotly figures; no network, no other library.
"use strict";
function setUpTable(box) {
  const table = box.querySelector("table");
  const body = table.tBodies[0];
  const heads = Array.from(table.tHead.rows[0].cells);
  const show = (col, on) => {
    for (const row of table.rows) row.cells[col].classList.toggle("hidden", !on);
  };
  box.querySelectorAll("input.col").forEach((box_, col) => {
    show(col, box_.checked);
    box_.addEventListener("change", () => show(col, box_.checked));
  });
  heads.forEach((th, col) => th.addEventListener("click", () => {
    const up = !th.classList.contains("asc");
    heads.forEach((h) => h.classList.remove("asc", "desc"));
    th.classList.add(up ? "asc" : "desc");
    const key = (row) => {
      const v = row.cells[col].dataset.key;
      return v === undefined || v === "" ? null : (isNaN(Number(v)) ? v : Number(v));
    };
    const rows = Array.from(body.rows).sort((a, b) => {
      const x = key(a), y = key(b);
      if (x === null || y === null) return (x === null) - (y === null);  // n/a last either way
      return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
    });
    rows.forEach((r) => body.appendChild(r));
  }));
  const filter = box.querySelector("input[type=search]");
  if (filter) filter.addEventListener("input", () => {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    for (const row of body.rows) {
      const text = row.textContent.toLowerCase();
      row.classList.toggle("hidden", !words.every((w) => text.includes(w)));
    }
    box.querySelector(".count").textContent = Array.from(body.rows).filter((r) => !r.classList.contains("hidden")).length;
  });
}
document.querySelectorAll(".table-box").forEach(setUpTable);
for (const [id, fig] of Object.entries(FIGURES)) {
  Plotly.newPlot(id, fig.data, fig.layout, {displaylogo: false, responsive: true});
}
