// Render every chart of the page: each div of class vega-chart with a data-spec attribute gets the
// Vega-Lite spec stored (as inert JSON) in the application/json script whose id it names. vega-embed is inlined
// once per page; no action links to the online editor (this page makes no network requests).
(function () {
  "use strict";
  var options = {
    renderer: "svg",
    actions: { export: true, source: false, compiled: false, editor: false },
  };
  // spec id -> Promise of the chart's Vega view (null if it could not be drawn), for scripts that
  // change a chart's data later (report/prompts.js)
  var views = (window.headreportCharts = window.headreportCharts || {});
  document.querySelectorAll(".vega-chart[data-spec]").forEach(function (el) {
    var holder = document.getElementById(el.getAttribute("data-spec"));
    if (!holder) {
      console.error("headreport: missing chart spec " + el.getAttribute("data-spec"));
      return;
    }
    var spec = JSON.parse(holder.textContent);
    views[el.getAttribute("data-spec")] = window.vegaEmbed(el, spec, options).then(function (result) {
      el.setAttribute("data-rendered", "true");
      return result.view;
    }).catch(function (err) {
      el.setAttribute("data-rendered", "error");
      el.textContent = "This chart could not be drawn: " + err;
      console.error(err);
      return null;
    });
  });
})();
