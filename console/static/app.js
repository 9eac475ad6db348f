// Breakwater console: applies the server-sent events of /api/events to the
// tables on the page. The pages are whole without it; it only keeps them
// current. No framework, no build step.
(function () {
  'use strict';
  // Pages without live tables (the login page) do not subscribe.
  if (!window.EventSource || document.body.getAttribute('data-live') !== '1') { return; }
  var live = document.getElementById('live');
  var es = new EventSource('/api/events');
  es.onopen = function () { if (live) { live.textContent = 'live'; live.className = 'on'; } };
  es.onerror = function () { if (live) { live.textContent = 'reconnecting'; live.className = 'off'; } };
  es.onmessage = function (m) {
    var e;
    try { e = JSON.parse(m.data); } catch (err) { return; }
    apply(e);
  };

  function apply(e) {
    var tables = document.querySelectorAll('table.live[data-kind="' + e.kind + '"]');
    for (var i = 0; i < tables.length; i++) { applyRow(tables[i], e); }
    if (e.kind === 'stat' && e.key === 'done') { refreshCharts(); }
  }

  function applyRow(table, e) {
    var body = table.tBodies[0];
    var tr = null;
    for (var i = 0; i < body.rows.length; i++) {
      if (body.rows[i].getAttribute('data-key') === e.key) { tr = body.rows[i]; break; }
    }
    if (table.getAttribute('data-firing-only') === '1' && e.cells.status !== 'firing') {
      if (tr) { tr.remove(); }
      return;
    }
    if (!tr) {
      var empty = body.querySelector('tr.empty');
      if (empty) { empty.remove(); }
      tr = document.createElement('tr');
      tr.setAttribute('data-key', e.key);
      var heads = table.tHead.rows[0].cells;
      for (var h = 0; h < heads.length; h++) {
        var td = document.createElement('td');
        td.setAttribute('data-f', heads[h].getAttribute('data-f'));
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    tr.className = e['class'] || '';
    var cells = tr.querySelectorAll('td[data-f]');
    for (var c = 0; c < cells.length; c++) {
      var v = e.cells[cells[c].getAttribute('data-f')];
      if (v !== undefined && cells[c].textContent !== v) {
        cells[c].textContent = v;
        cells[c].classList.remove('changed');
        void cells[c].offsetWidth; // restart the highlight
        cells[c].classList.add('changed');
      }
    }
  }

  var lastCharts = 0;
  function refreshCharts() {
    var now = Date.now();
    if (now - lastCharts < 5000) { return; }
    lastCharts = now;
    var imgs = document.querySelectorAll('img.chart[data-src]');
    for (var i = 0; i < imgs.length; i++) {
      imgs[i].src = imgs[i].getAttribute('data-src') + '?t=' + now;
    }
  }
})();
