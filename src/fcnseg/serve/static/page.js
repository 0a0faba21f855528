"use strict";
// The page of `fcnseg serve`: send an image to /predict, draw its mask over it, list the classes and their areas.
// Everything it needs is served by fcnseg itself (no CDN, no other network).

const $ = (id) => document.getElementById(id);
const view = { photo: null, mask: null };

function setState(state, message) {
  document.body.dataset.state = state;
  $("status").textContent = message;
}

function authHeaders() {
  const key = $("key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function askForKey(message) {
  $("key-row").hidden = false;
  $("key").focus();
  setState("error", message);
}

async function loadInfo() {
  let response;
  try {
    response = await fetch("info", { headers: authHeaders() });
  } catch (err) {
    setState("error", `The server did not answer: ${err}`);
    return;
  }
  const info = await response.json().catch(() => ({ error: response.statusText }));
  if (response.status === 401) return askForKey(`${info.error} (enter the server's key)`);
  if (!response.ok) return setState("error", info.error);
  const backend = `${info.backend} (${info.precision})`;
  $("model").textContent = `${info.model} · ${info.classes.length} classes · ${info.bands}-band images · ${backend}`;
  if (document.body.dataset.state !== "ready") setState("idle", "");
}

function bytesOf(base64) {
  const text = atob(base64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

async function segment(file) {
  setState("busy", `Segmenting ${file.name}…`);
  const body = new FormData();
  body.append("file", file);
  let response;
  try {
    response = await fetch("predict?format=json", { method: "POST", body, headers: authHeaders() });
  } catch (err) {
    return setState("error", `The server did not answer: ${err}`);
  }
  const answer = await response.json().catch(() => ({ error: response.statusText }));
  if (response.status === 401) return askForKey(`${answer.error} (enter the server's key)`);
  if (!response.ok) return setState("error", `${file.name}: ${answer.error}`);
  const maskBlob = new Blob([bytesOf(answer.mask_png)], { type: "image/png" });
  view.mask = await createImageBitmap(maskBlob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  try {
    view.photo = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    view.photo = null; // e.g. a TIFF, which browsers do not draw: the mask is shown alone
  }
  draw();
  showAreas(answer.classes);
  const link = $("download");
  if (link.href) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(maskBlob);
  link.download = `${file.name.replace(/\.[^.]*$/, "")}_mask.png`;
  const note = view.photo ? "" : " (the browser cannot draw this image: the mask alone)";
  $("caption").textContent = `${file.name}: ${answer.width} × ${answer.height} pixels${note}`;
  $("result").hidden = false;
  setState("ready", `Segmented ${file.name}.`);
}

// The overlay: the image, then the mask's colours at the chosen opacity, (1 - a) * image + a * colour, as the
// overlays of `fcnseg predict`.
function draw() {
  const opacity = Number($("opacity").value);
  $("opacity-value").textContent = `${opacity}%`;
  if (!view.mask) return;
  const canvas = $("overlay");
  const { width, height } = view.mask;
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  context.globalAlpha = 1;
  context.fillStyle = "#000";
  context.fillRect(0, 0, width, height);
  if (view.photo) context.drawImage(view.photo, 0, 0, width, height);
  context.globalAlpha = opacity / 100;
  context.drawImage(view.mask, 0, 0);
  context.globalAlpha = 1;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

// One row per class: the legend (swatch and name) and its area in the mask.
function showAreas(classes) {
  const body = $("areas").tBodies[0];
  body.replaceChildren();
  for (const entry of classes) {
    const row = body.insertRow();
    row.dataset.index = entry.index;
    if (entry.pixels === 0) row.className = "absent";
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${entry.color.join(",")})`;
    cell(row, "").append(swatch);
    cell(row, entry.name);
    cell(row, `${(100 * entry.share).toFixed(1)}%`, "num");
    cell(row, entry.pixels.toLocaleString("en"), "num");
  }
}

const drop = $("drop");
$("file").addEventListener("change", (event) => event.target.files[0] && segment(event.target.files[0]));
$("opacity").addEventListener("input", draw);
$("key").addEventListener("change", loadInfo);
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  const file = event.dataTransfer.files[0];
  if (file) segment(file);
});
document.addEventListener("dragover", (event) => event.preventDefault()); // a missed drop must not leave the page
document.addEventListener("drop", (event) => event.preventDefault());
loadInfo();
