// facelab book: runs between require.js and embed-amd.js on pages with ipywidgets output
// (nb_ipywidgets_js in _config.yml).
(function () {
  // The widget manager finds its assets (its font, 1551f4f60c37af51121f.woff2) next to the URL
  // that RequireJS gives its modules: point that at this folder, not at the page's folder.
  var here = new URL(".", document.currentScript.src).href;
  window.require.config({ paths: { "@jupyter-widgets/html-manager/dist": here.replace(/\/$/, "") } });
  // ipywidgets 8 typesets widget labels with the MathJax 2 API (MathJax.Hub.Queue); the book
  // loads MathJax 3, which has no Hub. Widgets render on "load", after MathJax 3 has replaced
  // window.MathJax, so the bridge is added on DOMContentLoaded.
  document.addEventListener("DOMContentLoaded", function () {
    var mathjax = window.MathJax;
    if (!mathjax || mathjax.Hub || !mathjax.startup) return;
    mathjax.Hub = {
      Queue: function (command) {  // ["Typeset", MathJax.Hub, element]
        var element = command && command[2];
        if (element) mathjax.startup.promise.then(function () { return mathjax.typesetPromise([element]); });
      },
    };
  });
})();
