// What the token explorer and the prompt menu share (report/explorer.js, report/prompts.js): their
// data are classic scripts loaded on first use (file:// blocks fetch), base64 text inflated with
// DecompressionStream. Loaded before either of them on every page that runs one.
(function () {
  "use strict";
  var scripts = {}; // src -> Promise

  // load a data script once; ready() says whether it registered its data. A failed load can be
  // tried again.
  function script(src, ready) {
    if (ready()) return Promise.resolve();
    if (!scripts[src]) {
      scripts[src] = new Promise(function (resolve, reject) {
        var s = document.createElement("script");
        s.src = src;
        s.onload = function () { ready() ? resolve() : reject(new Error(src + " did not register its data")); };
        s.onerror = function () { delete scripts[src]; reject(new Error("could not load " + src)); };
        document.head.appendChild(s);
      });
    }
    return scripts[src];
  }

  function base64Bytes(text) {
    var bin = atob(text);
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  // zlib-deflated bytes, inflated; ``who`` names what needs it in the error of an old browser
  function inflate(bytes, who) {
    if (typeof DecompressionStream === "undefined") {
      return Promise.reject(new Error("this browser has no DecompressionStream, which " + who + " needs"));
    }
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Response(stream).arrayBuffer().then(function (buf) { return new Uint8Array(buf); });
  }

  // a new element: tag, class, text (as text: token strings never become markup)
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  window.headreportLoad = { script: script, base64Bytes: base64Bytes, inflate: inflate, el: el };
})();
