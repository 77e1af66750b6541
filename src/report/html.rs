//! The HTML report: one self-contained page (inline style, data and script; no network, no
//! external resource) with a sharing chart (images × layers, columns as wide as the layers'
//! compressed bytes), a bar chart of the largest waste, and sortable tables.
//!
//! The report's JSON is embedded as a `<script type="application/json">` block (every `<`
//! escaped, so no data can close the tag) and drawn by the inline script with DOM calls
//! (`textContent`, never `innerHTML` with data). When the script has drawn everything it sets
//! `data-report="ready"` on `<html>`; any uncaught error sets `data-report="error"` and shows
//! the message, which is what the browser test checks.

use super::analysis::Report;
use std::io::{self, Write};

/// The colour of layers used by several images in the sharing chart.
pub const SHARED_COLOUR: &str = "#1f77b4";
/// The colour of layers used by one image in the sharing chart.
pub const UNIQUE_COLOUR: &str = "#ff7f0e";
/// The colour of the waste bars.
pub const WASTE_COLOUR: &str = "#d62728";

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 12px} h2{font-size:17px;margin:28px 0 8px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:150px}
.card b{display:block;font-size:18px}
.card span{color:#666;font-size:12px}
table{border-collapse:collapse;margin:4px 0 12px;font-size:13px}
th,td{border-bottom:1px solid #e4e4e4;padding:3px 8px;text-align:left;vertical-align:top}
th{cursor:pointer;background:#f6f6f6;user-select:none;white-space:nowrap}
th.sorted-asc::after{content:" \25B2"} th.sorted-desc::after{content:" \25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
.muted{color:#777} svg text{font:12px system-ui,sans-serif;fill:#222}
#errors{color:#b00;white-space:pre-wrap}
"#;

const SCRIPT: &str = r##"
"use strict";
window.addEventListener("error", function (e) {
  document.documentElement.setAttribute("data-report", "error");
  var p = document.getElementById("errors");
  p.textContent += "script error: " + e.message + "\n";
});
(function () {
  var R = JSON.parse(document.getElementById("report-data").textContent);
  var C = JSON.parse(document.getElementById("report-colours").textContent);
  var SVG = "http://www.w3.org/2000/svg";
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function sv(tag, attrs, text) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function human(n) {
    var u = ["B", "kB", "MB", "GB", "TB", "PB"], i = 0, v = n;
    while (v >= 1000 && i < u.length - 1) { v /= 1000; i++; }
    return i === 0 ? n + " B" : v.toFixed(1) + " " + u[i];
  }
  function pct(r) { return (r * 100).toFixed(1) + "%"; }
  function short(d) { return String(d).replace("sha256:", "").slice(0, 12); }
  function section(title) {
    var s = el("section");
    s.appendChild(el("h2", {}, title));
    document.getElementById("content").appendChild(s);
    return s;
  }
  // A sortable table: columns [title, kind], rows of [display, sort value].
  function table(parent, columns, rows) {
    var t = el("table"), thead = el("thead"), tr = el("tr"), tbody = el("tbody");
    columns.forEach(function (c, i) {
      var th = el("th", {}, c[0]);
      th.addEventListener("click", function () { sortBy(i, th); });
      tr.appendChild(th);
    });
    thead.appendChild(tr); t.appendChild(thead); t.appendChild(tbody);
    function draw(rs) {
      while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
      rs.forEach(function (r) {
        var row = el("tr");
        r.forEach(function (cell, i) {
          row.appendChild(el("td", columns[i][1] === "num" ? {"class": "num"} : {}, cell[0]));
        });
        tbody.appendChild(row);
      });
    }
    var dir = {};
    function sortBy(i, th) {
      dir[i] = dir[i] === "desc" ? "asc" : "desc";
      Array.prototype.forEach.call(tr.children, function (h) { h.className = ""; });
      th.className = "sorted-" + dir[i];
      var s = rows.slice().sort(function (a, b) {
        var x = a[i][1], y = b[i][1];
        var c = x < y ? -1 : x > y ? 1 : 0;
        return dir[i] === "asc" ? c : -c;
      });
      draw(s);
    }
    draw(rows);
    parent.appendChild(t);
    return t;
  }
  function n(v) { return [human(v), v]; }
  function s(v) { return [v === null || v === undefined ? "" : String(v), String(v)]; }

  var S = R.summary;
  document.getElementById("title").textContent =
    "wcbuild dedup: " + S.images + " image(s), " + S.layers + " layer blob(s)";
  var cards = el("div", {"class": "cards"});
  [["logical (compressed)", human(S.logical_bytes.compressed)],
   ["stored (compressed)", human(S.stored_bytes.compressed)],
   ["dedup savings", human(S.dedup_savings.compressed)],
   ["dedup ratio", S.dedup_ratio.compressed.toFixed(2) + "x"],
   ["stored (uncompressed)", human(S.stored_bytes.uncompressed)],
   ["wasted (files)", human(S.wasted_bytes)],
   ["missed dedup", human(S.missed_dedup_bytes)],
   ["foreign layers", human(S.foreign_bytes)]].forEach(function (c) {
    var d = el("div", {"class": "card"});
    d.appendChild(el("b", {}, c[1]));
    d.appendChild(el("span", {}, c[0]));
    cards.appendChild(d);
  });
  document.getElementById("content").appendChild(cards);

  // Sharing chart: a row per image, a column per layer blob as wide as its bytes.
  var sec = section("Which images share which layers");
  var legend = el("div", {"class": "legend muted"}, "column width = compressed layer size;");
  [["shared by several images", C.shared], ["used by one image", C.unique]].forEach(function (l) {
    var sw = el("span"); sw.style.background = l[1];
    legend.appendChild(sw); legend.appendChild(document.createTextNode(l[0]));
  });
  sec.appendChild(legend);
  var labelW = 260, chartW = 900, rowH = 22, total = 0;
  R.layers.forEach(function (l) { total += l.compressed_bytes; });
  var minW = 3, xs = [], x = labelW;
  var scale = (chartW - minW * R.layers.length) / Math.max(total, 1);
  R.layers.forEach(function (l) {
    var w = minW + l.compressed_bytes * scale;
    xs.push([x, w]); x += w;
  });
  var svg = sv("svg", {id: "sharing-chart", width: labelW + chartW + 10,
    height: R.images.length * rowH + 10, role: "img"});
  R.images.forEach(function (img, i) {
    var y = 5 + i * rowH;
    var name = img.name.length > 40 ? "…" + img.name.slice(-39) : img.name;
    svg.appendChild(sv("text", {x: 4, y: y + 15}, name));
    svg.appendChild(sv("rect", {x: labelW, y: y + 2, width: chartW, height: rowH - 4, fill: "#f0f0f0"}));
  });
  R.layers.forEach(function (l, k) {
    l.images.forEach(function (i) {
      var r = sv("rect", {x: xs[k][0], y: 5 + i * rowH + 2, width: Math.max(xs[k][1] - 1, 1),
        height: rowH - 4, fill: l.refcount >= 2 ? C.shared : C.unique});
      r.appendChild(sv("title", {}, short(l.digest) + ": " + human(l.compressed_bytes) +
        ", used by " + l.refcount + " image(s)"));
      svg.appendChild(r);
    });
  });
  sec.appendChild(svg);

  // The largest waste: offenders as bars.
  sec = section("Largest waste (hidden or rewritten files)");
  var offenders = R.offenders.slice(0, 20);
  if (offenders.length === 0) {
    sec.appendChild(el("p", {"class": "muted"}, "No file is hidden by a later layer."));
  } else {
    var max = offenders[0].bytes, bw = 700, bh = 20, lw = 420;
    var bars = sv("svg", {id: "waste-chart", width: lw + bw + 90, height: offenders.length * bh + 10, role: "img"});
    offenders.forEach(function (o, i) {
      var y = 5 + i * bh, w = Math.max(2, bw * o.bytes / Math.max(max, 1));
      var label = o.kind.replace("_", " ") + ": " + o.path;
      if (label.length > 60) label = "…" + label.slice(-59);
      bars.appendChild(sv("text", {x: 4, y: y + 14}, label));
      var r = sv("rect", {x: lw, y: y + 2, width: w, height: bh - 4, fill: C.waste});
      r.appendChild(sv("title", {}, o.image + " layer " + o.layer + ": " + (o.created_by || "")));
      bars.appendChild(r);
      bars.appendChild(sv("text", {x: lw + w + 6, y: y + 14}, human(o.bytes)));
    });
    sec.appendChild(bars);
  }

  sec = section("Images");
  table(sec, [["image", "str"], ["platform", "str"], ["layers", "num"], ["pull", "num"],
    ["shared", "num"], ["unique", "num"], ["amortized", "num"], ["wasted", "num"],
    ["efficiency", "num"], ["unchanged rewrites", "num"]],
    R.images.map(function (i) {
      return [s(i.name), s(i.platform), [String(i.layers.length), i.layers.length],
        n(i.pull_bytes.compressed), n(i.shared_bytes.compressed), n(i.unique_bytes.compressed),
        n(i.amortized_bytes.compressed), n(i.files.wasted_bytes),
        [pct(i.files.efficiency), i.files.efficiency], n(i.files.unchanged_rewrite_bytes)];
    }));

  sec = section("Layers");
  table(sec, [["digest", "str"], ["compressed", "num"], ["uncompressed", "num"],
    ["images", "num"], ["files", "num"], ["duplicate within", "num"], ["foreign", "str"]],
    R.layers.map(function (l) {
      return [[short(l.digest), l.digest], n(l.compressed_bytes), n(l.uncompressed_bytes),
        [String(l.refcount), l.refcount], [String(l.files), l.files], n(l.dup_within_bytes),
        s(l.foreign ? "yes" : "")];
    }));

  sec = section("Top offenders");
  table(sec, [["size", "num"], ["kind", "str"], ["image", "str"], ["layer", "num"],
    ["path", "str"], ["added by", "str"]],
    R.offenders.map(function (o) {
      return [n(o.bytes), s(o.kind.replace("_", " ")), s(o.image), [String(o.layer), o.layer],
        s(o.path), s(o.created_by || "")];
    }));

  var D = R.duplicates;
  sec = section("Duplicate content");
  sec.appendChild(el("p", {}, "within a layer " + human(D.within_layer_bytes) +
    ", across layers of an image " + human(D.across_layers_bytes) +
    ", across images outside shared layers " + human(D.across_images_bytes)));
  table(sec, [["redundant", "num"], ["copies", "num"], ["size", "num"], ["sha256", "str"],
    ["where", "str"]],
    D.groups.map(function (g) {
      return [n(g.redundant_bytes), [String(g.copies), g.copies], n(g.size), [short(g.sha256), g.sha256],
        s(g.locations.map(function (l) { return l.image + " #" + l.layer + " " + l.path; }).join("; "))];
    }));

  if (R.missed_dedup.length) {
    sec = section("Missed dedup (one layer, several compressed blobs)");
    table(sec, [["diff_id", "str"], ["missed", "num"], ["blobs", "str"]],
      R.missed_dedup.map(function (m) {
        return [[short(m.diff_id), m.diff_id], n(m.missed_bytes),
          s(m.blobs.map(function (b) { return short(b.digest) + " " + human(b.bytes); }).join(", "))];
      }));
  }

  R.incremental_pull.forEach(function (g) {
    if (g.images.length < 2) return;
    sec = section("Incremental pull, " + g.group + " (row pulled, column present)");
    var cols = [["pulled \\ present", "str"]].concat(g.images.map(function (_, k) { return ["[" + k + "]", "num"]; }));
    table(sec, cols, g.bytes.map(function (row, k) {
      return [["[" + k + "] " + g.images[k], g.images[k]]].concat(row.map(n));
    }));
  });

  document.documentElement.setAttribute("data-report", "ready");
})();
"##;

/// Writes the HTML report.
pub fn render(report: &Report, out: &mut impl Write) -> io::Result<()> {
    // `<` escaped as \u003c: the JSON stays valid and nothing in it can end the script block.
    let data = serde_json::to_string(report)
        .map_err(io::Error::other)?
        .replace('<', "\\u003c");
    let colours = serde_json::json!({
        "shared": SHARED_COLOUR,
        "unique": UNIQUE_COLOUR,
        "waste": WASTE_COLOUR,
    });
    write!(
        out,
        "<!doctype html>\n<html lang=\"en\" data-report=\"loading\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n\
         <title>wcbuild dedup report</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1 id=\"title\">wcbuild dedup report</h1>\n<pre id=\"errors\"></pre>\n\
         <noscript>This report draws its charts and tables with JavaScript.</noscript>\n\
         <div id=\"content\"></div>\n\
         <script type=\"application/json\" id=\"report-data\">{data}</script>\n\
         <script type=\"application/json\" id=\"report-colours\">{colours}</script>\n\
         <script>{SCRIPT}</script>\n</body>\n</html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::analysis::analyze;

    #[test]
    fn data_cannot_close_the_script_block() {
        let img = crate::report::ImageInput {
            names: vec!["evil</script><script>alert(1)</script>".into()],
            source: "store".into(),
            digest: "sha256:00".into(),
            manifest_bytes: 1,
            config_digest: "sha256:01".into(),
            config_bytes: 1,
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
            os_version: None,
            layers: Vec::new(),
        };
        let r = analyze(&[img], &Default::default(), 10);
        let mut out = Vec::new();
        render(&r, &mut out).unwrap();
        let html = String::from_utf8(out).unwrap();
        assert_eq!(html.matches("</script>").count(), 3, "{html}");
        assert!(html.contains("evil\\u003c/script>"));
        assert!(!html.contains("src="), "no external resource");
    }
}
