/* sendmsg dashboard: small progressive enhancements. Every page works without this file. */
(function () {
  "use strict";

  // Copy buttons stay hidden without scripts; the values are selectable text either way.
  function revealCopyButtons(root) {
    root.querySelectorAll("button[data-copy-target][hidden]").forEach(function (button) {
      button.hidden = false;
    });
  }

  function copyWithSelection(text) {
    // For pages served over plain http from a non-local host (no navigator.clipboard).
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try {
      ok = document.execCommand("copy");
    } finally {
      document.body.removeChild(area);
    }
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () {
        return copyWithSelection(text);
      });
    }
    return copyWithSelection(text);
  }

  function confirmCopy(button, message) {
    var note = button.parentNode.querySelector(".copied");
    if (!note) return;
    note.textContent = message;
    clearTimeout(button._copiedTimer);
    button._copiedTimer = setTimeout(function () {
      note.textContent = "";
    }, 3000);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy-target]");
    if (!button) return;
    var source = document.getElementById(button.getAttribute("data-copy-target"));
    if (!source) return;
    copyText(source.textContent.trim()).then(
      function () {
        confirmCopy(button, "Copied");
      },
      function () {
        confirmCopy(button, "Could not copy: select the text and copy it yourself");
      }
    );
  });

  document.addEventListener("change", function (event) {
    if (event.target.matches("select[data-autosubmit]")) event.target.form.submit();
  });

  // Forms marked data-fetch-swap post with fetch and swap in the returned fragment: each
  // top-level element of the answer replaces the page's element with the same id.
  function swapFragment(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    var swapped = [];
    Array.prototype.slice.call(doc.body.children).forEach(function (fresh) {
      var old = fresh.id && document.getElementById(fresh.id);
      if (old) {
        var node = document.importNode(fresh, true);
        old.replaceWith(node);
        swapped.push(node);
      }
    });
    revealCopyButtons(document);
    return swapped;
  }

  function setBusy(form, busy) {
    var button = form.querySelector("button[type=submit]");
    var region = document.getElementById(form.getAttribute("data-busy"));
    form.setAttribute("aria-busy", busy ? "true" : "false");
    if (region) {
      region.setAttribute("aria-busy", busy ? "true" : "false");
      region.classList.toggle("is-busy", busy);
    }
    if (button) {
      if (busy) {
        button.setAttribute("data-label", button.textContent);
        button.textContent = "Checking…";
      } else if (button.hasAttribute("data-label")) {
        button.textContent = button.getAttribute("data-label");
      }
      button.disabled = busy;
    }
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches("form[data-fetch-swap]") || !window.fetch || !window.DOMParser) return;
    event.preventDefault();
    if (form.getAttribute("aria-busy") === "true") return;
    var progress = document.getElementById(form.getAttribute("data-progress"));
    var say = function (text) {
      if (progress) progress.textContent = text;
    };
    var body = new FormData(form);
    setBusy(form, true);
    say("Checking the DNS records…");
    fetch(form.action, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { "X-Requested-With": "fetch" },
    })
      .then(function (response) {
        if (!response.ok || response.redirected) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        var swapped = swapFragment(html);
        if (!swapped.length) throw new Error("unexpected answer");
        setBusy(form, false);
        // The button was disabled while busy, which drops keyboard focus: give it back.
        if (document.activeElement === document.body) {
          var button = form.querySelector("button[type=submit]");
          if (button) button.focus();
        }
        say(swapped[0].getAttribute("data-summary") || "Check finished.");
      })
      .catch(function () {
        // Let the browser do it the plain way (post, redirect, full page).
        say("Checking without scripts…");
        form.submit();
      });
  });

  // A page marked [data-refresh="N"] (a message still on its way) fetches itself every N
  // seconds while the tab is visible and swaps in its [data-live] parts by id, until the
  // fresh page has no marker (every recipient final) or an hour has passed. Without
  // scripts the page says to reload it.
  function refreshLive(seconds, rounds) {
    if (rounds <= 0) return;
    setTimeout(function () {
      if (document.hidden) return refreshLive(seconds, rounds);
      fetch(window.location.href, { credentials: "same-origin" })
        .then(function (response) {
          if (!response.ok || response.redirected) throw new Error("HTTP " + response.status);
          return response.text();
        })
        .then(function (html) {
          var doc = new DOMParser().parseFromString(html, "text/html");
          document.querySelectorAll("[data-live][id]").forEach(function (old) {
            var fresh = doc.getElementById(old.id);
            if (fresh) old.replaceWith(document.importNode(fresh, true));
          });
          var marker = doc.querySelector("[data-refresh]");
          if (marker) refreshLive(seconds, rounds - 1);
        })
        .catch(function () {
          // Stop quietly: the page as shown stays, and a reload shows the latest.
        });
    }, seconds * 1000);
  }

  var live = document.querySelector("[data-refresh]");
  if (live && window.fetch && window.DOMParser) {
    var every = Math.max(2, parseInt(live.getAttribute("data-refresh"), 10) || 5);
    refreshLive(every, Math.ceil(3600 / every));
  }

  revealCopyButtons(document);
})();
