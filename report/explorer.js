// The token explorer of a head page (report/explorer.py writes its data scripts). Everything here is
// static and offline: the data are classic scripts loaded on first use (file:// blocks fetch): the
// vocabulary when the reader first uses the explorer, and a head's data shard by shard (a range of
// token ids each), when a token of that range is first shown. Both are inflated with
// DecompressionStream, and token text reaches the page only through textContent and attribute
// values, never as markup.
(function () {
  "use strict";
  var OPEN_BOX = "\u2423";
  var MAX_SUGGESTIONS = 12;
  var registry = (window.headreportExplorer = window.headreportExplorer || { heads: {} });
  var load = window.headreportLoad; // report/load.js
  var loadScript = load.script, base64Bytes = load.base64Bytes;
  function inflate(bytes) { return load.inflate(bytes, "the explorer"); }

  function pad(i) { var s = String(i); while (s.length < 5) s = "0" + s; return s; }

  function checkDigest(raw, sha256) {
    if (!(window.crypto && window.crypto.subtle)) return Promise.resolve();
    return window.crypto.subtle.digest("SHA-256", raw).then(function (d) {
      var hex = Array.prototype.map.call(new Uint8Array(d), function (b) {
        return (b < 16 ? "0" : "") + b.toString(16);
      }).join("");
      if (hex !== sha256) throw new Error("the explorer's data are corrupt (sha256 mismatch)");
    });
  }

  // arrays in byte planes: all lowest bytes, then all second bytes, ... (little-endian values); a
  // list field is its palette (distinct ids, most frequent first) then each entry's index in it
  function unpack(payload, raw) {
    if (raw.length !== payload.raw_bytes) throw new Error("the explorer's data have the wrong length");
    var size = payload.dtype === "uint16" ? 2 : 4;
    var offset = 0;
    function take(n) {
      var values = new Uint32Array(n);
      for (var b = 0; b < size; b++) {
        var plane = raw.subarray(offset + b * n, offset + (b + 1) * n);
        var scale = Math.pow(2, 8 * b);
        for (var i = 0; i < n; i++) values[i] += plane[i] * scale;
      }
      offset += n * size;
      return values;
    }
    var out = {};
    payload.fields.forEach(function (f) {
      var n = payload.shapes[f].reduce(function (a, b) { return a * b; }, 1);
      if (payload.palettes && payload.palettes[f]) {
        var palette = take(payload.palettes[f]), codes = take(n);
        for (var i = 0; i < n; i++) codes[i] = palette[codes[i]];
        out[f] = codes;
      } else {
        out[f] = take(n);
      }
    });
    return out;
  }

  function Explorer(root) {
    this.root = root;
    this.label = root.getAttribute("data-head");
    this.prefix = "hrx-" + this.label.replace(/[^A-Za-z0-9]/g, "-") + "-";
    this.shardDir = root.getAttribute("data-shards");
    this.shardTokens = +root.getAttribute("data-shard-tokens");
    this.shards = {}; // shard index -> Promise of its arrays
    this.shown = -1; // the token asked for last (a slower shard never overwrites a later choice)
    this.loading = null;
    this.active = -1;
    this.options = [];
    this.build();
  }

  Explorer.prototype.el = load.el;

  Explorer.prototype.build = function () {
    var self = this, id = this.prefix.replace(/-$/, "");
    var form = this.el("form", "hrx-form");
    form.setAttribute("role", "search");
    var label = this.el("label", null, "Token of head " + this.label + " (its text, " + OPEN_BOX +
      " or a space for a space, or #id)");
    label.htmlFor = id + "-input";
    var input = this.el("input", "hrx-input");
    input.id = id + "-input";
    input.type = "text";
    input.autocomplete = "off";
    input.spellcheck = false;
    input.setAttribute("role", "combobox");
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-expanded", "false");
    input.setAttribute("aria-controls", id + "-list");
    var button = this.el("button", "hrx-go", "Explore");
    button.type = "submit";
    var list = this.el("ul", "hrx-suggestions");
    list.id = id + "-list";
    list.setAttribute("role", "listbox");
    list.setAttribute("aria-label", "matching tokens");
    list.hidden = true;
    var status = this.el("p", "hrx-status");
    status.setAttribute("role", "status");
    status.setAttribute("aria-live", "polite");
    var result = this.el("div", "hrx-result");
    result.tabIndex = -1;
    form.appendChild(label);
    form.appendChild(input);
    form.appendChild(button);
    form.appendChild(list);
    this.root.textContent = "";
    this.root.appendChild(form);
    this.root.appendChild(status);
    this.root.appendChild(result);
    this.input = input; this.list = list; this.status = status; this.result = result;

    input.addEventListener("focus", function () { self.load(); });
    input.addEventListener("input", function () { self.load().then(function () { self.suggest(); }); });
    input.addEventListener("keydown", function (ev) { self.onKey(ev); });
    input.addEventListener("blur", function () { setTimeout(function () { self.close(); }, 150); });
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      self.load().then(function () { self.submit(); });
    });
    window.addEventListener("hashchange", function () { self.fromHash(); });
    if (location.hash.indexOf("#" + this.prefix) === 0) this.fromHash();
  };

  Explorer.prototype.say = function (text) { this.status.textContent = text; };

  Explorer.prototype.load = function () {
    var self = this;
    if (this.loading) return this.loading;
    this.say("Loading the explorer's data…");
    var tokensSrc = this.root.getAttribute("data-tokens");
    this.loading = loadScript(tokensSrc, function () { return !!(registry.tokens || registry.tokenData); })
      .then(function () {
        if (registry.tokens) return registry.tokens;
        var packed = registry.tokenData;
        return inflate(base64Bytes(packed.data)).then(function (raw) {
          return checkDigest(raw, packed.sha256).then(function () {
            if (raw.length !== packed.raw_bytes) throw new Error("the vocabulary has the wrong length");
            registry.tokens = JSON.parse(new TextDecoder("utf-8").decode(raw));
            return registry.tokens;
          });
        });
      })
      .then(function (tokens) {
        self.tokens = tokens;
        self.n = tokens.length;
        self.say("Ready: " + self.n.toLocaleString("en") + " tokens. Type to search; choose a token to explore it.");
      })
      .catch(function (err) {
        self.say("The explorer could not load its data: " + err.message);
        console.error(err);
        throw err;
      });
    return this.loading;
  };

  // ids sorted by visible form (built once, on the first search)
  Explorer.prototype.sorted = function () {
    if (!this.order) {
      var t = this.tokens, order = new Array(this.n);
      for (var i = 0; i < this.n; i++) order[i] = i;
      order.sort(function (a, b) { return t[a] < t[b] ? -1 : t[a] > t[b] ? 1 : a - b; });
      this.order = order;
    }
    return this.order;
  };

  Explorer.prototype.normalise = function (q) { return q.replace(/ /g, OPEN_BOX); };

  // the visible form of raw text, as report/escaping.py visible() makes it: a token's real text (a
  // backslash, U+202E, a zero-width joiner, ESC...) finds the token, not only its visible form
  var NAMED = {" ": OPEN_BOX, "\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"};
  NAMED[OPEN_BOX] = "\\u2423";
  var INVISIBLE = /^[\p{Cc}\p{Cf}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]$/u;
  var hex = function (cp, n) { var h = cp.toString(16); while (h.length < n) h = "0" + h; return h; };
  Explorer.prototype.visibleForm = function (raw) {
    var out = "";
    for (var ch of raw) {
      var cp = ch.codePointAt(0);
      if (NAMED.hasOwnProperty(ch)) out += NAMED[ch];
      else if (INVISIBLE.test(ch)) out += cp < 0x80 ? "\\x" + hex(cp, 2) : cp < 0x10000 ? "\\u" + hex(cp, 4) : "\\U" + hex(cp, 8);
      else out += ch;
    }
    return out;
  };

  Explorer.prototype.matches = function (raw) {
    var out = [], seen = {}, t = this.tokens;
    var push = function (id) { if (!seen[id] && out.length < MAX_SUGGESTIONS) { seen[id] = true; out.push(id); } };
    var idMatch = /^#?([0-9]+)$/.exec(raw.trim());
    if (idMatch && +idMatch[1] < this.n) push(+idMatch[1]);
    // what was typed read as a visible form (`\n`, `␣`), then as a token's real text
    var queries = [this.normalise(raw), this.visibleForm(raw)].filter(function (q, i, a) {
      return q !== "" && a.indexOf(q) === i;
    });
    var order = this.sorted();
    queries.forEach(function (q) {
      var lo = 0, hi = order.length;
      while (lo < hi) { var mid = (lo + hi) >> 1; if (t[order[mid]] < q) lo = mid + 1; else hi = mid; }
      for (var i = lo; i < order.length && out.length < MAX_SUGGESTIONS && t[order[i]].indexOf(q) === 0; i++) push(order[i]);
    });
    if (out.length < MAX_SUGGESTIONS && queries.length) { // then case-insensitive prefixes
      var ql = queries[0].toLowerCase();
      for (var j = 0; j < this.n && out.length < MAX_SUGGESTIONS; j++) {
        if (t[j].toLowerCase().indexOf(ql) === 0) push(j);
      }
    }
    return out;
  };

  Explorer.prototype.suggest = function () {
    var self = this;
    this.options = this.matches(this.input.value);
    this.active = -1;
    this.list.textContent = "";
    this.options.forEach(function (id, i) {
      var li = self.el("li", "hrx-option");
      li.id = self.prefix + "option-" + i;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", "false");
      li.appendChild(self.el("span", "hrx-token", self.tokens[id]));
      li.appendChild(self.el("span", "hrx-id", "#" + id));
      li.addEventListener("mousedown", function (ev) { ev.preventDefault(); self.choose(id); });
      self.list.appendChild(li);
    });
    var open = this.options.length > 0 && this.input.value !== "";
    this.list.hidden = !open;
    this.input.setAttribute("aria-expanded", open ? "true" : "false");
    this.input.removeAttribute("aria-activedescendant");
    if (this.input.value !== "" && !this.options.length) this.say("No token starts with that text.");
  };

  Explorer.prototype.close = function () {
    this.list.hidden = true;
    this.input.setAttribute("aria-expanded", "false");
    this.input.removeAttribute("aria-activedescendant");
  };

  Explorer.prototype.highlight = function (i) {
    var items = this.list.children;
    for (var j = 0; j < items.length; j++) items[j].setAttribute("aria-selected", j === i ? "true" : "false");
    this.active = i;
    if (i >= 0) this.input.setAttribute("aria-activedescendant", items[i].id);
  };

  Explorer.prototype.onKey = function (ev) {
    if (!this.options.length || this.list.hidden) return;
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      ev.preventDefault();
      var n = this.options.length, step = ev.key === "ArrowDown" ? 1 : -1;
      this.highlight((this.active + step + n) % n);
    } else if (ev.key === "Escape") {
      this.close();
    } else if (ev.key === "Enter" && this.active >= 0) {
      ev.preventDefault();
      this.choose(this.options[this.active]);
    }
  };

  Explorer.prototype.submit = function () {
    var raw = this.input.value, q = this.normalise(raw);
    var exact = this.tokens.indexOf(q);
    if (exact >= 0) return this.choose(exact);
    var found = this.matches(raw);
    if (found.length) return this.choose(found[0]);
    this.say("No token matches that text or id.");
  };

  // show token ``id`` and record it in the address (back and forward work; the link can be shared)
  Explorer.prototype.go = function (id, focus) {
    var hash = "#" + this.prefix + id;
    if (location.hash !== hash) {
      // a frame with no URL of its own (a notebook's srcdoc display) has no history to push to
      try { history.pushState(null, "", hash); } catch (e) { /* the view still shows; no back button */ }
    }
    this.input.value = this.tokens[id];
    this.show(id, focus);
  };

  Explorer.prototype.choose = function (id) {
    this.close();
    this.input.value = this.tokens[id];
    this.go(id, false);
  };

  Explorer.prototype.fromHash = function () {
    var self = this, h = location.hash;
    if (h.indexOf("#" + this.prefix) !== 0) return;
    var id = +h.slice(this.prefix.length + 1);
    this.load().then(function () {
      if (id >= 0 && id < self.n && String(id) === h.slice(self.prefix.length + 1)) {
        self.input.value = self.tokens[id];
        self.show(id, true);
      }
    });
  };

  Explorer.prototype.link = function (id) {
    var a = this.el("a", "hrx-link");
    var self = this;
    a.href = "#" + this.prefix + id;
    a.addEventListener("click", function (ev) { ev.preventDefault(); self.go(id, true); });
    a.appendChild(this.el("span", "hrx-token", this.tokens[id]));
    a.appendChild(this.el("span", "hrx-id", "#" + id));
    return a;
  };

  Explorer.prototype.list_ = function (title, ids) {
    var box = this.el("div", "hrx-list");
    box.appendChild(this.el("h5", null, title));
    var ol = this.el("ol");
    for (var i = 0; i < ids.length; i++) {
      var li = this.el("li");
      li.appendChild(this.link(ids[i]));
      ol.appendChild(li);
    }
    box.appendChild(ol);
    return box;
  };

  // the arrays of shard ``i`` (tokens i·shardTokens …), loaded and checked once; a failed load can be
  // tried again
  Explorer.prototype.shard = function (i) {
    var self = this, label = this.label, h = registry.heads[label];
    if (h && h.shards && h.shards.whole) i = "whole"; // a page with the head's data inline: one payload
    if (this.shards[i]) return this.shards[i];
    var ready = function () { var h = registry.heads[label]; return !!(h && h.shards && h.shards[i]); };
    this.shards[i] = loadScript(this.shardDir + "/" + pad(i) + ".js", ready).then(function () {
      var payload = registry.heads[label].shards[i];
      return inflate(base64Bytes(payload.data)).then(function (raw) {
        return checkDigest(raw, payload.sha256).then(function () {
          if (payload.d_vocab !== self.n) throw new Error("the vocabulary and the head's data disagree");
          if (payload.start !== (i === "whole" ? 0 : i * self.shardTokens)) {
            throw new Error("the head's data are out of order");
          }
          var d = unpack(payload, raw);
          d.start = payload.start;
          d.k = payload.k;
          return d;
        });
      });
    });
    this.shards[i].catch(function () { delete self.shards[i]; });
    return this.shards[i];
  };

  Explorer.prototype.row = function (d, field, id) {
    var at = id - d.start;
    return Array.prototype.slice.call(d[field].subarray(at * d.k, (at + 1) * d.k));
  };

  Explorer.prototype.show = function (id, focus) {
    var self = this;
    this.shown = id;
    this.say("Loading token #" + id + "…");
    return this.shard(Math.floor(id / this.shardTokens)).then(function (d) {
      if (self.shown === id) self.draw(d, id, focus);
    }).catch(function (err) {
      self.say("The explorer could not load its data: " + err.message);
      console.error(err);
    });
  };

  Explorer.prototype.draw = function (d, id, focus) {
    var n = this.n.toLocaleString("en"), r = this.result, at = id - d.start;
    r.textContent = "";
    var h = this.el("h4", "hrx-title");
    h.appendChild(this.el("span", "hrx-token", this.tokens[id]));
    h.appendChild(this.el("span", "hrx-id", "#" + id));
    r.appendChild(h);
    var grid = this.el("div", "hrx-grid");
    var ov = this.el("section", "hrx-card");
    ov.appendChild(this.el("h5", "hrx-card-title", "As a source (OV circuit)"));
    ov.appendChild(this.el("p", null, "When the head attends to this token, its own logit ranks " +
      d.ov_rank[at].toLocaleString("en") + " of " + n + " (1 = most lowered)."));
    ov.appendChild(this.list_("Logits it lowers most", this.row(d, "ov_low", id)));
    ov.appendChild(this.list_("Logits it raises most", this.row(d, "ov_high", id)));
    var key = this.el("section", "hrx-card");
    key.appendChild(this.el("h5", "hrx-card-title", "As a key (QK circuit)"));
    key.appendChild(this.el("p", null, "When the query predicts this token, this token's key ranks " +
      d.qk_rank[at].toLocaleString("en") + " of " + n + " (1 = most attended; " +
      this.root.getAttribute("data-qk-note") + ")."));
    key.appendChild(this.list_("Queries that attend to it most", this.row(d, "qk_queries", id)));
    var query = this.el("section", "hrx-card");
    query.appendChild(this.el("h5", "hrx-card-title", "As a query (QK circuit)"));
    query.appendChild(this.el("p", null, "When the query predicts this token, the keys it attends to most."));
    query.appendChild(this.list_("Keys it attends to most", this.row(d, "qk_keys", id)));
    grid.appendChild(ov); grid.appendChild(key); grid.appendChild(query);
    r.appendChild(grid);
    r.setAttribute("data-token", String(id));
    this.say("Showing token #" + id + ".");
    if (focus) r.focus({ preventScroll: false });
  };

  document.querySelectorAll(".hr-explorer[data-head]").forEach(function (root) { new Explorer(root); });
})();
