// pcapsense report: draws each chart from its JSON block and wires the copy buttons.
// The figures are data (script type="application/json"), parsed with JSON.parse: nothing from the capture is
// ever evaluated. No network access: plotly.min.js sits next to this file.
(function () {
  "use strict";
  // No mode bar: drag to zoom, double-click to reset; the page stays clean enough to paste into a postmortem.
  var CONFIG = { displayModeBar: false, responsive: true };

  function drawCharts() {
    var charts = document.querySelectorAll("div.chart");
    for (var i = 0; i < charts.length; i++) {
      var el = charts[i];
      var block = document.getElementById(el.id + "-json");
      if (!block) { continue; }
      if (typeof Plotly === "undefined") {
        el.textContent = "plotly.min.js is missing from the report directory: charts cannot be drawn.";
        continue;
      }
      var fig = JSON.parse(block.textContent);
      Plotly.newPlot(el, fig.data, fig.layout, CONFIG);
    }
  }

  function flash(button, text) {
    var before = button.textContent;
    button.textContent = text;
    setTimeout(function () { button.textContent = before; }, 1500);
  }

  function copyFallback(node) {
    var range = document.createRange();
    range.selectNodeContents(node);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    try { return document.execCommand("copy"); } catch (e) { return false; }
  }

  function wireCopyButtons() {
    var buttons = document.querySelectorAll("button.copy");
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].addEventListener("click", function (event) {
        var button = event.currentTarget;
        var node = document.getElementById(button.getAttribute("data-target"));
        if (!node) { return; }
        var text = node.textContent;
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(
            function () { flash(button, "Copied"); },
            function () { flash(button, copyFallback(node) ? "Copied" : "Select and copy"); });
        } else {
          flash(button, copyFallback(node) ? "Copied" : "Select and copy");
        }
      });
    }
  }

  wireCopyButtons();
  drawCharts();
}());
