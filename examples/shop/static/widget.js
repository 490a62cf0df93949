/*
 * A stand-in for the Neuroon search widget: plain JavaScript, no build step.
 *
 * It fills <div id="neuroon-results" data-api-url data-shop-id data-query
 * data-product-url data-currency> with the results of
 *   GET {api}/api/widget/shops/{shopId}/search?q=...
 * and, when a result is clicked, records the click the way the real widget does:
 *
 *   neuroon_clicks = encodeURIComponent(JSON.stringify({productId: searchLogId, ...}))
 *   path=/; SameSite=Lax; max-age=30 days (plus Secure on https), not HttpOnly
 *
 * The map is merged with the cookie already there, the newest click first, and the
 * cookie is cut to 4096 bytes (name=value), so when it is full the oldest clicks go
 * and the server reads the complete entries before the cut. Then the link's own
 * navigation takes the shopper to the product page.
 */
(function () {
  "use strict";

  var COOKIE = "neuroon_clicks";
  var MAX_BYTES = 4096;
  var MAX_AGE = 30 * 24 * 3600;

  function readClicks() {
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      if (parts[i].indexOf(COOKIE + "=") !== 0) continue;
      try {
        var map = JSON.parse(decodeURIComponent(parts[i].slice(COOKIE.length + 1)));
        if (!map || typeof map !== "object" || Array.isArray(map)) return {};
        var clean = {};
        Object.keys(map).forEach(function (key) {
          if (typeof map[key] === "string") clean[key] = map[key];
        });
        return clean;
      } catch (e) {
        return {}; // cut or mangled: start again rather than break the click
      }
    }
    return {};
  }

  function recordClick(productId, searchLogId) {
    var previous = readClicks();
    var map = {};
    map[productId] = searchLogId;
    Object.keys(previous).forEach(function (key) {
      if (key !== productId) map[key] = previous[key];
    });
    // encodeURIComponent output is ASCII: one character is one byte.
    var value = encodeURIComponent(JSON.stringify(map));
    value = value.slice(0, MAX_BYTES - COOKIE.length - 1);
    document.cookie =
      COOKIE + "=" + value + "; path=/; SameSite=Lax; max-age=" + MAX_AGE +
      (location.protocol === "https:" ? "; Secure" : "");
  }

  function show(container, text) {
    container.textContent = "";
    var p = document.createElement("p");
    p.className = "status";
    p.textContent = text;
    container.appendChild(p);
  }

  function formatPrice(price, currency) {
    if (typeof price !== "number") return "";
    try {
      return new Intl.NumberFormat(undefined, { style: "currency", currency: currency })
        .format(price); // display only: the shop's server does the money
    } catch (e) {
      return String(price) + " " + currency;
    }
  }

  function render(container, results) {
    container.textContent = "";
    if (!results.length) {
      show(container, "No products match.");
      return;
    }
    var list = document.createElement("ul");
    results.forEach(function (result) {
      var item = document.createElement("li");
      var link = document.createElement("a");
      link.className = "neuroon-result";
      link.href = container.dataset.productUrl.replace(
        "__ID__", encodeURIComponent(result.productId));
      link.textContent = result.name;
      link.dataset.productId = result.productId;
      link.dataset.searchLogId = result.searchLogId;
      var record = function () { recordClick(result.productId, result.searchLogId); };
      link.addEventListener("click", record); // then the browser follows the link
      link.addEventListener("auxclick", function (event) {
        if (event.button === 1) record(); // middle click: opens a tab
      });
      item.appendChild(link);
      var price = document.createElement("span");
      price.className = "price";
      price.textContent = " " + formatPrice(result.price, container.dataset.currency);
      item.appendChild(price);
      list.appendChild(item);
    });
    container.appendChild(list);
  }

  function search(container) {
    var api = (container.dataset.apiUrl || "").replace(/\/+$/, "");
    var query = container.dataset.query || "";
    if (!api || !container.dataset.shopId) {
      show(container, "Search is not configured (NEUROON_API_URL, NEUROON_SHOP_ID).");
      return;
    }
    var url = api + "/api/widget/shops/" + encodeURIComponent(container.dataset.shopId) +
      "/search?q=" + encodeURIComponent(query);
    fetch(url, { headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (body) { render(container, body.results || []); })
      .catch(function () { show(container, "Search is unavailable right now."); });
  }

  function start() {
    var container = document.getElementById("neuroon-results");
    if (container) search(container);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
