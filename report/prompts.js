// The prompt menu of a head page (report/prompt_data.py writes its data scripts). The page holds the
// first prompt's rows inline in the two chart specs and the menu's labels; another prompt's data are
// a classic script loaded when it is first chosen (file:// blocks fetch), its attention pattern
// inflated with DecompressionStream, and its rows handed to the charts' Vega views
// (view.data(name, rows)). Prompt and token text reach the page only through textContent and
// Vega's SVG text, never as markup.
(function () {
  "use strict";
  var registry = (window.headreportPrompts = window.headreportPrompts || {});
  var load = window.headreportLoad; // report/load.js
  var loadScript = load.script, base64Bytes = load.base64Bytes;
  function inflate(bytes) { return load.inflate(bytes, "the prompt menu"); }

  // the n(n+1)/2 stored weights (analysis/attention_patterns.py): uint16 in byte planes, row by row
  function patternWeights(data) {
    return inflate(base64Bytes(data.pattern)).then(function (raw) {
      var m = data.n * (data.n + 1) / 2;
      if (raw.length !== 2 * m) throw new Error("prompt " + data.prompt + "'s attention pattern has the wrong length");
      var out = new Float64Array(m);
      for (var k = 0; k < m; k++) out[k] = (raw[k] + 256 * raw[m + k]) / data.scale;
      return out;
    });
  }

  // the rows of report/charts.py: attention_rows and final_position_rows
  function attentionRows(data, weights) {
    var rows = [], k = 0, labels = data.labels;
    for (var q = 0; q < data.n; q++) {
      for (var s = 0; s <= q; s++, k++) {
        rows.push({ prompt: data.prompt, query_pos: q, source_pos: s, query: labels[q], source: labels[s],
                    weight: weights[k] });
      }
    }
    return rows;
  }

  function finalRows(data) {
    var rows = [];
    for (var s = 0; s < data.n; s++) {
      rows.push({ prompt: data.prompt, pos: s, source: data.labels[s], token: data.tokens[s],
                  weight: data.weight[s], effect: data.effect[s], via_source: data.via_source[s] });
    }
    return rows;
  }

  function chartView(figureId) {
    var fig = document.getElementById(figureId);
    var el = fig && fig.querySelector(".vega-chart[data-spec]");
    var charts = window.headreportCharts || {};
    var pending = el && charts[el.getAttribute("data-spec")];
    if (!pending) return Promise.reject(new Error("the chart " + figureId + " is not on this page"));
    return pending.then(function (view) {
      if (!view) throw new Error("the chart " + figureId + " could not be drawn");
      return view;
    });
  }

  function Menu(root) {
    this.root = root;
    this.label = root.getAttribute("data-head");
    this.n = +root.getAttribute("data-n");
    this.base = root.getAttribute("data-base");
    this.targets = [
      { figure: root.getAttribute("data-attention"), data: root.getAttribute("data-attention-data"), rows: "attention" },
      { figure: root.getAttribute("data-final"), data: root.getAttribute("data-final-data"), rows: "final" }
    ];
    var holder = root.querySelector("script.hr-prompt-labels");
    this.labels = holder ? JSON.parse(holder.textContent) : [];
    this.request = 0;
    this.build();
  }

  Menu.prototype.el = load.el;

  Menu.prototype.build = function () {
    var self = this, id = "hrp-" + this.label.replace(/[^A-Za-z0-9]/g, "-");
    var box = this.el("div", "hr-prompt-menu");
    var label = this.el("label", null, "Prompt: ");
    label.htmlFor = id + "-select";
    var select = this.el("select", "hr-prompt-select");
    select.id = id + "-select";
    for (var i = 0; i < this.labels.length; i++) {
      var option = this.el("option", null, this.labels[i]);
      option.value = String(i + 1);
      select.appendChild(option);
    }
    var status = this.el("span", "hr-prompt-status");
    status.setAttribute("role", "status");
    status.setAttribute("aria-live", "polite");
    status.style.marginLeft = "0.75em";
    box.style.margin = "0 0 0.5em";
    box.appendChild(label);
    box.appendChild(select);
    box.appendChild(status);
    this.select = select;
    this.status = status;
    var fig = document.getElementById(this.targets[0].figure);
    if (fig) {
      fig.insertBefore(box, fig.firstChild);
    } else {
      this.root.appendChild(box);
    }
    this.targets.forEach(function (t) {
      var f = document.getElementById(t.figure);
      if (f) f.setAttribute("data-prompt", "1");
    });
    select.addEventListener("change", function () { self.choose(+select.value); });
    this.say("Showing prompt 1 of " + this.n + ".");
  };

  Menu.prototype.say = function (text) { this.status.textContent = text; };

  Menu.prototype.load = function (number) {
    var key = this.label + "/" + number;
    return loadScript(this.base + number + ".js", function () { return !!registry[key]; })
      .then(function () { return registry[key]; });
  };

  // draw prompt ``number`` (1-based) in both charts; a later choice supersedes an earlier one
  Menu.prototype.choose = function (number) {
    var self = this, request = ++this.request;
    this.say("Loading prompt " + number + "…");
    return this.load(number).then(function (data) {
      if (data.n !== data.labels.length || data.n !== data.weight.length) {
        throw new Error("prompt " + number + "'s data are inconsistent");
      }
      return patternWeights(data).then(function (weights) {
        if (request !== self.request) return null;
        return Promise.all(self.targets.map(function (t) {
          return chartView(t.figure).then(function (view) {
            var rows = t.rows === "attention" ? attentionRows(data, weights) : finalRows(data);
            return view.data(t.data, rows).runAsync().then(function () {
              if (request !== self.request) return;
              document.getElementById(t.figure).setAttribute("data-prompt", String(number));
            });
          });
        }));
      });
    }).then(function (done) {
      if (done === null || request !== self.request) return;
      self.say("Showing prompt " + number + " of " + self.n + ".");
    }).catch(function (err) {
      self.say("Prompt " + number + " could not be shown: " + err.message);
      console.error(err);
    });
  };

  document.querySelectorAll(".hr-prompts[data-head]").forEach(function (root) { new Menu(root); });
})();
