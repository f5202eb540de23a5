// Injected by the browser tests (tests/browser_helpers.py) into a copy of a report page; the
// product page has no script. It records script errors, failed loads and console.error calls into
// a pre element #console-errors (with their count in data-count), and once the page has loaded sets
// data-loaded, data-images, data-broken-images and data-min-image-scale (the smallest shown width /
// drawn width of its pictures) on an empty paragraph #page-status, so that --dump-dom tells whether
// the page rendered cleanly and at what scale.
(function () {
  var errors = [];
  function element(tag, id) {
    var el = document.getElementById(id);
    if (!el && document.body) {
      el = document.createElement(tag);
      el.id = id;
      document.body.appendChild(el);
    }
    return el;
  }
  function show() {
    var el = element('pre', 'console-errors');
    if (el) { el.setAttribute('data-count', String(errors.length)); el.textContent = errors.join('\n'); }
  }
  window.addEventListener('error', function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) {
      errors.push('failed to load: ' + String(t.src || t.href).slice(0, 120));
    } else {
      errors.push('error: ' + e.message + (e.filename ? ' (' + e.filename + ':' + e.lineno + ')' : ''));
    }
    show();
  }, true);
  window.addEventListener('unhandledrejection', function (e) {
    errors.push('unhandled rejection: ' + e.reason); show();
  });
  var original = console.error;
  console.error = function () {
    errors.push('console.error: ' + Array.prototype.join.call(arguments, ' ')); show();
    return original.apply(console, arguments);
  };
  window.addEventListener('load', function () {
    var imgs = document.images, broken = 0;
    for (var i = 0; i < imgs.length; i++) {
      if (!imgs[i].complete || imgs[i].naturalWidth === 0) { broken++; }
    }
    if (broken) { errors.push(broken + ' image(s) did not render'); }
    var scale = 1;
    for (var j = 0; j < imgs.length; j++) {
      if (imgs[j].naturalWidth) { scale = Math.min(scale, imgs[j].clientWidth / imgs[j].naturalWidth); }
    }
    var st = element('p', 'page-status');
    st.setAttribute('data-loaded', '1');
    st.setAttribute('data-images', String(imgs.length));
    st.setAttribute('data-broken-images', String(broken));
    st.setAttribute('data-min-image-scale', scale.toFixed(3));
    show();
  });
})();
