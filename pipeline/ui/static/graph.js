// The project's graph: Cytoscape.js (vendored, served by this server) draws /ui/graph.json;
// nodes sized by strength and coloured by type; selecting a node opens its pattern. The same
// data is listed as links below the canvas for keyboard and screen-reader users.
"use strict";
(() => {
  function list(container, elements, base) {
    const titles = new Map(elements.nodes.map((n) => [n.data.id, n.data.label]));
    container.textContent = "";
    const heading = (text) => { const h = document.createElement("h3"); h.textContent = text; return h; };
    const ul = document.createElement("ul");
    for (const n of elements.nodes) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = base + encodeURIComponent(n.data.id);
      a.textContent = n.data.label;
      li.append(a, " (" + n.data.type.replaceAll("_", " ") + ", strength " + n.data.strength.toFixed(2) + ")");
      ul.append(li);
    }
    const edges = document.createElement("ul");
    for (const e of elements.edges) {
      const li = document.createElement("li");
      li.textContent = (titles.get(e.data.source) || "?") + " → " + e.data.label.replaceAll("_", " ") + " → " + (titles.get(e.data.target) || "?");
      edges.append(li);
    }
    const count = (n, word) => n + " " + word + (n === 1 ? "" : "s");
    container.append(heading(count(elements.nodes.length, "pattern")), ul,
                     heading(count(elements.edges.length, "relationship")), edges);
  }

  function draw(box, elements, base) {
    box.textContent = "";
    if (!elements.nodes.length) {
      box.dataset.rendered = "0";
      const p = document.createElement("p");
      p.className = "loading";
      p.textContent = "No patterns yet.";
      box.append(p);
      return;
    }
    const cy = window.cytoscape({
      container: box,
      elements: elements,
      wheelSensitivity: 0.3,
      minZoom: 0.2,
      maxZoom: 2,
      style: [
        { selector: "node", style: {
          "background-color": "data(color)", width: "data(size)", height: "data(size)",
          label: "data(label)", "font-size": 10, "text-wrap": "ellipsis", "text-max-width": 140,
          color: "#1b1f23", "text-valign": "bottom", "text-margin-y": 3 } },
        { selector: "edge", style: {
          width: "data(width)", "line-color": "#8c959f", "target-arrow-color": "#8c959f",
          "target-arrow-shape": "triangle", "curve-style": "bezier", label: "data(label)",
          "font-size": 8, color: "#57606a" } },
        { selector: "node:selected", style: { "border-width": 3, "border-color": "#f5a623" } },
      ],
      layout: { name: "cose", animate: false, padding: 30, nodeDimensionsIncludeLabels: true,
                idealEdgeLength: () => 100, nodeRepulsion: () => 400000, nodeOverlap: 20 },
    });
    cy.on("tap", "node", (event) => { window.location.href = base + encodeURIComponent(event.target.id()); });
    window.patternGraph = cy;
    box.dataset.rendered = String(cy.nodes().length);
  }

  document.addEventListener("DOMContentLoaded", async () => {
    const box = document.getElementById("graph");
    const listBox = document.getElementById("graph-list");
    const src = (box && box.dataset.src) || (listBox && listBox.dataset.src);
    if (!src) return;
    let elements;
    try {
      const response = await fetch(src, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error("HTTP " + response.status);
      elements = await response.json();
    } catch (error) {
      if (box) box.textContent = "The graph could not be loaded: " + error.message;
      return;
    }
    const base = (box && box.dataset.patternBase) || "";
    if (listBox) list(listBox, elements, base || src.replace(/graph\.json$/, "patterns/"));
    if (box && box.dataset.src && window.cytoscape) draw(box, elements, base);
  });
})();
