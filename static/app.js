// htmx drops 4xx/5xx responses by default, so a boosted form that fails validation would seem to do nothing.
// Our error responses are written to be shown: full pages for boosted requests, and fragments that the server
// retargets (HX-Retarget) for other htmx requests. Swap exactly those; anything else that fails (a proxy's 502
// page arriving at a polling fragment, say) is still left alone.
document.addEventListener("htmx:beforeSwap", function (event) {
  var xhr = event.detail.xhr;
  if (xhr.status >= 400 && (event.detail.boosted || xhr.getResponseHeader("HX-Retarget"))) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});

// A filter box inside another form (the new group's instrument picker) narrows a list as you type; Enter there
// must not submit the surrounding form.
document.addEventListener("keydown", function (event) {
  var target = event.target;
  if (event.key === "Enter" && target instanceof Element && target.matches("input[data-filter]")) {
    event.preventDefault();
  }
});

// Export links (a[data-download]): a report can take several seconds to build, and a plain download link shows
// nothing until the file arrives. Fetch it instead, say so beside the link while it is built, then save it under
// the server's file name. Without JavaScript the link still downloads the file.
function downloadName(disposition) {
  var match = /filename\*=UTF-8''([^;]+)/i.exec(disposition || "");
  try {
    return match ? decodeURIComponent(match[1]) : "export";
  } catch (e) {
    return "export";
  }
}

document.addEventListener("click", function (event) {
  var link = event.target instanceof Element ? event.target.closest("a[data-download]") : null;
  if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  if (link.getAttribute("aria-busy") === "true") return;
  var status = link.parentElement.querySelector("[data-download-status]");
  var started = Date.now();
  var say = function (text) { if (status) status.textContent = text; };
  link.setAttribute("aria-busy", "true");
  say("正在生成文件，请稍候……");
  fetch(link.href, { credentials: "same-origin" })
    .then(function (response) {
      if (!response.ok) {
        say("导出失败（" + response.status + "），请稍后重试。");
        return null;
      }
      var disposition = response.headers.get("Content-Disposition") || "";
      if (response.redirected || disposition.indexOf("attachment") < 0) {
        // Not a file (the session ended and the server sent the login page, say): show it, as the link would.
        window.location.href = response.url;
        return null;
      }
      var name = downloadName(disposition);
      return response.blob().then(function (blob) {
        var url = URL.createObjectURL(blob);
        var save = document.createElement("a");
        save.href = url;
        save.download = name;
        document.body.appendChild(save);
        save.click();
        save.remove();
        setTimeout(function () { URL.revokeObjectURL(url); }, 60000);
        say("已生成 " + name + "（用时 " + ((Date.now() - started) / 1000).toFixed(1) + " 秒），已开始下载。");
      });
    })
    .catch(function () { say("导出失败：网络中断，请重试。"); })
    .finally(function () { link.removeAttribute("aria-busy"); });
});

// Header menus (details[data-nav-menu]): one open at a time, closed by a click or focus elsewhere or by Escape
// (focus goes back to the menu's summary when it was inside). Without JavaScript they still open and close on
// their summary.
function closeMenus(except) {
  document.querySelectorAll("details[data-nav-menu][open]").forEach(function (menu) {
    if (menu !== except) menu.removeAttribute("open");
  });
}

function menuOf(target) {
  return target instanceof Element ? target.closest("details[data-nav-menu]") : null;
}

document.addEventListener("click", function (event) {
  closeMenus(menuOf(event.target));
});

document.addEventListener("focusin", function (event) {
  closeMenus(menuOf(event.target));
});

document.addEventListener("keydown", function (event) {
  if (event.key !== "Escape") return;
  var menu = menuOf(event.target);
  if (menu && menu.open) menu.querySelector("summary").focus();
  closeMenus(null);
});

// htmx keeps a snapshot of the page for the Back button, taken just before the next swap: menus are closed first.
document.addEventListener("htmx:beforeHistorySave", function () {
  closeMenus(null);
});

// A form marked data-keep-on-back (the catalogue's filters) keeps what was typed and chosen in its fields'
// properties, which the snapshot does not copy, and the snapshot is taken when the form already holds the next
// search. The address is what the restored page shows: fill the form from it.
document.addEventListener("htmx:historyRestore", function () {
  var params = new URLSearchParams(location.search);
  document.querySelectorAll("form[data-keep-on-back]").forEach(function (form) {
    Array.prototype.forEach.call(form.elements, function (field) {
      if (!field.name) return;
      var values = params.getAll(field.name);
      if (field instanceof HTMLInputElement && (field.type === "checkbox" || field.type === "radio")) {
        field.checked = values.indexOf(field.value) >= 0;
      } else if (field instanceof HTMLSelectElement) {
        Array.prototype.forEach.call(field.options, function (option) {
          option.selected = values.length ? values.indexOf(option.value) >= 0 : option.defaultSelected;
        });
        if (!values.length && field.selectedIndex < 0) field.selectedIndex = 0;
      } else if ((field instanceof HTMLInputElement && field.type !== "file" && field.type !== "password") ||
                 field instanceof HTMLTextAreaElement) {
        field.value = values.length ? values[0] : "";
      }
    });
  });
});

// A form marked data-keep-on-back (the catalogue's filters) searches as you type and puts its filters in the
// address: only the ones in use, so a shared or bookmarked link reads q=质谱&city=510700, not every empty field.
document.addEventListener("htmx:configRequest", function (event) {
  var form = event.detail.elt;
  if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-keep-on-back")) return;
  var data = event.detail.formData;
  var empty = [];
  data.forEach(function (value, name) {
    if (value === "" && empty.indexOf(name) < 0) empty.push(name);
  });
  empty.forEach(function (name) {
    if (data.getAll(name).every(function (value) { return value === ""; })) data.delete(name);
  });
});

// Live filtering stops at a field the browser finds invalid (a negative 原值 in the catalogue): htmx then sends no
// request, and the results would stay as they were without a word. Say why beside the field, in the page's words
// (data-invalid-message) where it has them; the note goes as soon as the field is valid again.
document.addEventListener("htmx:validation:halted", function (event) {
  (event.detail.errors || []).forEach(function (error) {
    if (error.elt instanceof HTMLElement && error.elt.id) {
      setFieldNote(error.elt, error.elt.getAttribute("data-invalid-message") || error.message);
    }
  });
});
document.addEventListener("input", function (event) {
  var field = event.target;
  if (field instanceof HTMLInputElement && field.validity.valid) setFieldNote(field, null);
});

function setFieldNote(field, text) {
  var id = "e-" + field.id;
  var note = document.getElementById(id);
  if (!text) {
    if (note && note.hasAttribute("data-live-note")) {
      note.remove();
      field.removeAttribute("aria-invalid");
      field.removeAttribute("aria-describedby");
    }
    return;
  }
  if (!note) {
    note = document.createElement("div");
    note.id = id;
    note.className = "field-error";
    note.setAttribute("data-live-note", "");
    note.setAttribute("role", "alert");
    field.insertAdjacentElement("afterend", note);
  }
  note.textContent = text;
  field.setAttribute("aria-invalid", "true");
  field.setAttribute("aria-describedby", id);
}

// A link inside a region marked data-focus-after-link (the catalogue's facets and pages) replaces the page through
// hx-boost, which leaves keyboard focus on <body>: the next Tab would start again at the top of the page, 80 stops
// from the results. Focus goes to the element the region names (the result count, which also reads it out).
document.addEventListener("htmx:afterSettle", function (event) {
  var config = event.detail.requestConfig;
  var link = config && config.elt;
  // Only a page that replaced the body: a refused link shows its error in #flash, which keeps the focus.
  if (!(link instanceof HTMLAnchorElement) || event.detail.target !== document.body) return;
  var region = link.closest("[data-focus-after-link]");
  var target = region && document.querySelector(region.getAttribute("data-focus-after-link"));
  if (target instanceof HTMLElement) target.focus();
});
