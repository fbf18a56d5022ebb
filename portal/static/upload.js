// Upload from the desktop or a CD into a draft transfer, then show the draft to check and send.
// The page works without this file for studies already in Ferry; this is the part where a
// browser API (reading a chosen folder) is the point. Steps:
//  1. keep the DICOM files: a Part 10 file has "DICM" at byte 128 (everything else is skipped,
//     and so is a DICOMDIR: it describes files, it is not one);
//  2. create a draft transfer (POST /api/transfers, the form's destination, priority and note);
//  3. store the files with STOW-RS into it (POST /dicom-web/studies?transfer=ID) in batches,
//     each retried with a growing wait when the connection drops; "Resume" continues after the
//     last stored batch;
//  4. load the draft's summary (patients and studies found) with its Send button.
(function () {
  "use strict";
  var form = document.getElementById("send-form");
  if (!form) { return; }
  var inputs = Array.prototype.slice.call(document.querySelectorAll("[data-upload-input]"));
  var progress = document.getElementById("upload-progress");
  var bar = document.getElementById("upload-bar");
  var status = document.getElementById("upload-status");
  var errors = document.getElementById("upload-errors");
  var resume = document.getElementById("upload-resume");
  var draftBox = document.getElementById("draft");
  var BATCH_FILES = 20;
  var BATCH_BYTES = 32 * 1024 * 1024;
  var TRIES = 4;
  var state = null; // {draft, batches, next, stored, failed}

  var REASONS = {
    0x0110: "processing failure (a UID of this instance is already in use)",
    0xA700: "out of resources (the server's disk is full; try later)",
    0xA900: "the data set does not match its SOP class",
    0xC000: "cannot understand (the file is damaged or cut short)",
    0x0122: "this kind of object is not accepted",
    0x0124: "not authorised"
  };

  function csrfToken() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRF-Token"] || "";
    } catch (e) { return ""; }
  }

  function chosenFiles() {
    var files = [];
    inputs.forEach(function (input) {
      Array.prototype.forEach.call(input.files || [], function (f) { files.push(f); });
    });
    return files;
  }

  function say(text) { status.textContent = text; }

  function problem(text) {
    var item = document.createElement("li");
    item.textContent = text;
    errors.appendChild(item);
    errors.hidden = false;
  }

  function label(file) { return file.webkitRelativePath || file.name; }

  // A Part 10 file's Media Storage SOP Class and Instance UIDs (its file meta information is
  // always explicit VR little endian): the instance UID names the file a failure is about.
  // null when the file is not DICOM.
  var DIRECTORY_CLASS = "1.2.840.10008.1.3.10"; // a DICOMDIR describes files; it is not one
  function readMeta(file) {
    return file.slice(0, 4096).arrayBuffer().then(function (buffer) {
      var bytes = new Uint8Array(buffer);
      if (bytes.length < 132 || String.fromCharCode(bytes[128], bytes[129], bytes[130], bytes[131]) !== "DICM") {
        return null;
      }
      var view = new DataView(buffer);
      var meta = { sopClass: "", uid: "" };
      var at = 132;
      while (at + 8 <= bytes.length && view.getUint16(at, true) === 0x0002) {
        var element = view.getUint16(at + 2, true);
        var vr = String.fromCharCode(bytes[at + 4], bytes[at + 5]);
        var length, start;
        if (["OB", "OW", "OF", "SQ", "UT", "UN"].indexOf(vr) >= 0) {
          if (at + 12 > bytes.length) { break; }
          length = view.getUint32(at + 8, true); start = at + 12;
        } else {
          length = view.getUint16(at + 6, true); start = at + 8;
        }
        if (start + length > bytes.length) { break; }
        var text = String.fromCharCode.apply(null, bytes.subarray(start, start + length)).replace(/[\0 ]+$/, "");
        if (element === 0x0002) { meta.sopClass = text; }
        if (element === 0x0003) { meta.uid = text; }
        at = start + length;
      }
      return meta.sopClass === DIRECTORY_CLASS ? null : meta;
    });
  }

  function batchesOf(entries) {
    var batches = [], current = [], size = 0;
    entries.forEach(function (entry) {
      if (current.length && (current.length >= BATCH_FILES || size + entry.file.size > BATCH_BYTES)) {
        batches.push(current); current = []; size = 0;
      }
      current.push(entry); size += entry.file.size;
    });
    if (current.length) { batches.push(current); }
    return batches;
  }

  function destination() {
    var picked = form.querySelector("input[name=destination]:checked");
    if (!picked) { return null; }
    var parts = picked.value.split(":");
    return { institution: parts[0], node: parts.length > 1 ? parts.slice(1).join(":") : null };
  }

  function fieldValue(name) {
    var field = form.querySelector("[name=" + name + "]:checked") || form.querySelector("[name=" + name + "]");
    return field ? field.value : "";
  }

  function reasonOf(response) {
    return response.text().then(function (text) {
      try { return JSON.parse(text).detail || text; } catch (e) { return text; }
    });
  }

  function createDraft(target) {
    var studies = Array.prototype.map.call(
      document.querySelectorAll("input[name=study][form=send-form]:checked"), function (c) { return c.value; });
    var body = {
      institution: form.getAttribute("data-institution"),
      destination: target.institution,
      node: target.node,
      studies: studies,
      priority: fieldValue("priority") || "routine",
      note: fieldValue("note"),
      send: false
    };
    return fetch("/api/transfers", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrfToken() },
      body: JSON.stringify(body)
    }).then(function (response) {
      if (!response.ok) {
        return reasonOf(response).then(function (why) { throw new Error("The draft could not be made: " + why); });
      }
      return response.json();
    }).then(function (made) { return made.id; });
  }

  function stowBody(batch, boundary) {
    var parts = [];
    batch.forEach(function (entry) {
      parts.push("--" + boundary + "\r\nContent-Type: application/dicom\r\n\r\n");
      parts.push(entry.file);
      parts.push("\r\n");
    });
    parts.push("--" + boundary + "--\r\n");
    return new Blob(parts);
  }

  // Each refusal named by its file: by the instance UID the answer gives, or, for a part Ferry
  // could not read far enough to find its UID, by elimination among the batch's files.
  function failuresOf(answer, batch) {
    var uidOf = function (item) { return ((item["00081155"] || {}).Value || [""])[0]; };
    var failed = ((answer || {})["00081198"] || {}).Value || [];
    var stored = ((answer || {})["00081199"] || {}).Value || [];
    var accounted = {};
    stored.forEach(function (item) { accounted[uidOf(item)] = true; });
    failed.forEach(function (item) { if (uidOf(item)) { accounted[uidOf(item)] = true; } });
    var unnamed = batch.filter(function (entry) { return !entry.uid || !accounted[entry.uid]; });
    var anonymous = failed.filter(function (item) { return !uidOf(item); });
    failed.forEach(function (item) {
      var code = ((item["00081197"] || {}).Value || [0])[0];
      var why = REASONS[code] || ("failure 0x" + Number(code).toString(16).toUpperCase());
      var entry = batch.filter(function (e) { return uidOf(item) && e.uid === uidOf(item); })[0];
      if (!entry && anonymous.length === unnamed.length) { entry = unnamed[anonymous.indexOf(item)]; }
      var names = entry ? label(entry.file) : "one of " + unnamed.map(function (e) { return label(e.file); }).join(", ");
      problem(names + ": " + why);
      state.failed += 1;
    });
    state.stored += stored.length;
  }

  function sendBatch(batch, tries) {
    var boundary = "ferry-" + Math.random().toString(36).slice(2) + Date.now().toString(36);
    return fetch("/dicom-web/studies?transfer=" + encodeURIComponent(state.draft), {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=' + boundary,
        "Accept": "application/dicom+json",
        "X-CSRF-Token": csrfToken()
      },
      body: stowBody(batch, boundary)
    }).then(function (response) {
      if (response.status === 200 || response.status === 202 || response.status === 409) {
        return response.json().catch(function () { return {}; }).then(function (doc) { failuresOf(doc, batch); });
      }
      if (response.status === 503 || response.status === 507 || response.status === 429) {
        throw { retry: true, message: "the server is busy or its disk is full (" + response.status + ")" };
      }
      return reasonOf(response).then(function (why) {
        batch.forEach(function (entry) { problem(label(entry.file) + ": " + why); });
        state.failed += batch.length;
      });
    }, function () {
      throw { retry: true, message: "the connection dropped" };
    }).catch(function (error) {
      if (!error || !error.retry || tries <= 1) { throw error; }
      say("Upload paused: " + error.message + ". Trying again…");
      var wait = Math.min(8000, 500 * Math.pow(2, TRIES - tries));
      return new Promise(function (done) { setTimeout(done, wait); }).then(function () {
        return sendBatch(batch, tries - 1);
      });
    });
  }

  function showProgress() {
    var total = state.batches.reduce(function (n, b) { return n + b.length; }, 0);
    var done = state.batches.slice(0, state.next).reduce(function (n, b) { return n + b.length; }, 0);
    bar.max = Math.max(total, 1);
    bar.value = done;
    say("Sent " + done + " of " + total + " files to Ferry (" + state.stored + " stored, " + state.failed + " refused" +
        (state.skipped ? ", " + state.skipped + " not DICOM and skipped" : "") + ").");
  }

  function run() {
    resume.hidden = true;
    if (state.next >= state.batches.length) { return finish(); }
    return sendBatch(state.batches[state.next], TRIES).then(function () {
      state.next += 1;
      showProgress();
      return run();
    }, function (error) {
      showProgress();
      say("The upload stopped: " + ((error && error.message) || error) + ". Files already stored stay in the draft.");
      resume.hidden = false;
    });
  }

  function finish() {
    showProgress();
    var url = form.getAttribute("data-draft-url") + encodeURIComponent(state.draft);
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) { return response.text(); })
      .then(function (html) {
        var parsed = new DOMParser().parseFromString(html, "text/html");
        var summary = parsed.getElementById("draft-summary");
        draftBox.replaceChildren(summary ? document.importNode(summary, true) : document.createTextNode(""));
        var heading = document.getElementById("draft-heading");
        if (heading) { heading.setAttribute("tabindex", "-1"); heading.focus(); }
      });
  }

  resume.addEventListener("click", function () { run(); });

  form.addEventListener("submit", function (event) {
    var files = chosenFiles();
    if (!files.length) { return; } // studies of our archive: the plain form does it
    event.preventDefault();
    var target = destination();
    if (!target) { say("Choose a destination first."); progress.hidden = false; return; }
    errors.replaceChildren(); errors.hidden = true;
    progress.hidden = false;
    draftBox.replaceChildren();
    document.getElementById("send-button").disabled = true;
    say("Reading " + files.length + " files…");
    Promise.all(files.map(function (file) {
      return readMeta(file).then(function (meta) { return { file: file, uid: meta && meta.uid, dicom: !!meta }; },
                                 function () { return { file: file, uid: null, dicom: false }; });
    })).then(function (entries) {
      var dicom = entries.filter(function (e) { return e.dicom; });
      state = { draft: null, batches: batchesOf(dicom), next: 0, stored: 0, failed: 0,
                skipped: entries.length - dicom.length };
      if (!dicom.length) { throw new Error("none of the chosen files is a DICOM file"); }
      showProgress();
      return createDraft(target);
    }).then(function (id) {
      state.draft = id;
      return run();
    }).catch(function (error) {
      say("Nothing was sent: " + ((error && error.message) || error));
    }).then(function () {
      document.getElementById("send-button").disabled = false;
    });
  });
}());
