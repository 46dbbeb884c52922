// The playground: asks this server's KServe v2 routes and shows what the models extract.
// No dependency, no external request. Offsets are in characters (code points), as the API's.
"use strict";

const $ = (id) => document.getElementById(id);
let examples = {};  // task -> example schema, from /playground/models

function colourOf(type) {
  let h = 0;
  for (const c of type) h = (h * 31 + c.codePointAt(0)) % 360;
  return { c: `hsl(${h} 80% 85%)`, b: `hsl(${h} 60% 40%)` };
}

function task() {
  return document.querySelector("input[name=task]:checked").value;
}

async function showModels() {
  const list = $("models");
  try {
    const info = await (await fetch("/playground/models")).json();
    list.replaceChildren();
    for (const [name, model] of Object.entries(info.models)) {
      const li = document.createElement("li");
      li.className = model.ready ? "ready" : "waiting";
      li.textContent = `${name}: ${model.ready ? "ready" : "warming up"}`;
      li.dataset.model = name;
      list.append(li);
      if (model.schema_example !== undefined) examples[name] = model.schema_example;
    }
    if (!$("schema").value && examples.uie) $("schema").value = JSON.stringify(examples.uie);
    if (Object.values(info.models).some((m) => !m.ready)) setTimeout(showModels, 1000);
  } catch (e) {
    list.textContent = "the server does not answer";
  }
}

// Spans of one result: [{id, type, start, end, probability}]; relations: [{subject, predicate, object}].
function uieSpans(result) {
  const spans = [], relations = [];
  const walk = (tree, parent) => {
    for (const [type, items] of Object.entries(tree)) {
      for (const item of items) {
        if (item.start === undefined) continue;  // classification labels have no span
        const span = { id: spans.length, type, start: item.start, end: item.end,
                       text: item.text, probability: item.probability };
        spans.push(span);
        if (parent) relations.push({ subject: parent, predicate: type, object: span });
        if (item.relations) walk(item.relations, span);
      }
    }
  };
  walk(result, null);
  return { spans, relations };
}

function spoSpans(result) {
  const spans = [], relations = [], seen = new Map();
  const spanOf = (type, text, start, end, probability) => {
    const key = `${type}|${start}|${end}`;
    if (!seen.has(key)) {
      const span = { id: spans.length, type, start, end, text, probability };
      seen.set(key, span);
      spans.push(span);
    }
    return seen.get(key);
  };
  for (const t of result.spo_list) {
    const subject = spanOf("subject", t.subject, t.subject_start, t.subject_end, t.score);
    const object = spanOf(t.predicate, t.object, t.object_start, t.object_end, t.score);
    relations.push({ subject, predicate: t.predicate, object });
  }
  return { spans, relations };
}

// The text with one <mark> per span and segment; nested spans nest (the longest outside).
function marked(text, spans) {
  const chars = Array.from(text);
  const cuts = new Set([0, chars.length]);
  for (const s of spans) { cuts.add(s.start); cuts.add(s.end); }
  const points = [...cuts].sort((a, b) => a - b);
  const p = document.createElement("p");
  p.className = "text";
  p.lang = "zh";
  for (let i = 0; i + 1 < points.length; i++) {
    const [a, b] = [points[i], points[i + 1]];
    let node = document.createTextNode(chars.slice(a, b).join(""));
    const covering = spans.filter((s) => s.start <= a && b <= s.end)
      .sort((x, y) => (x.end - x.start) - (y.end - y.start));
    for (const s of covering) {  // innermost first
      const mark = document.createElement("mark");
      const { c, b: border } = colourOf(s.type);
      mark.className = "span";
      mark.style.setProperty("--c", c);
      mark.style.setProperty("--b", border);
      Object.assign(mark.dataset, { spanId: s.id, type: s.type, start: s.start, end: s.end });
      mark.title = `${s.type} [${s.start}, ${s.end})` +
        (s.probability === undefined ? "" : ` p=${s.probability.toFixed(3)}`);
      mark.append(node);
      node = mark;
    }
    p.append(node);
  }
  return p;
}

function renderResult(text, item, index, kind) {
  const article = document.createElement("article");
  article.className = "result";
  article.dataset.index = index;
  if (item.error) {
    const p = document.createElement("p");
    p.textContent = text;
    p.className = "text";
    const err = document.createElement("p");
    err.className = "error text-error";
    err.textContent = `${item.error.type}: ${item.error.message}`;
    article.append(p, err);
    return article;
  }
  const { spans, relations } = kind === "uie" ? uieSpans(item) : spoSpans(item);
  article.append(marked(text, spans));
  const legend = document.createElement("ul");
  legend.className = "legend";
  for (const type of [...new Set(spans.map((s) => s.type))]) {
    const li = document.createElement("li");
    const { c, b } = colourOf(type);
    li.style.setProperty("--c", c);
    li.style.setProperty("--b", b);
    li.textContent = type;
    legend.append(li);
  }
  const list = document.createElement("ul");
  list.className = "relations";
  for (const r of relations) {
    const li = document.createElement("li");
    li.className = "relation";
    Object.assign(li.dataset, {
      subject: r.subject.text, subjectStart: r.subject.start, predicate: r.predicate,
      object: r.object.text, objectStart: r.object.start,
    });
    li.textContent = `${r.subject.text} [${r.subject.start}, ${r.subject.end}) --${r.predicate}--> ` +
      `${r.object.text} [${r.object.start}, ${r.object.end})`;
    list.append(li);
  }
  if (!spans.length) {
    const none = document.createElement("p");
    none.className = "none";
    none.textContent = "nothing found";
    article.append(none);
  }
  article.append(legend, list);
  return article;
}

function requestBody(kind, texts) {
  const inputs = [{ name: "text", datatype: "BYTES", shape: [texts.length], data: texts }];
  const body = { inputs };
  if (kind === "uie") {
    inputs.push({ name: "schema", datatype: "BYTES", shape: [1], data: [$("schema").value] });
    body.parameters = { position_prob: Number($("position-prob").value) };
  }
  return body;
}

function curlOf(kind, body) {
  const json = JSON.stringify(body).replaceAll("'", "'\\''");
  return `curl -s ${location.origin}/v2/models/${kind}/infer -H 'Content-Type: application/json' -d '${json}'`;
}

async function ask(event) {
  event.preventDefault();
  const kind = task();
  const texts = $("texts").value.split("\n").filter((t) => t !== "");
  const body = requestBody(kind, texts);
  $("curl").textContent = curlOf(kind, body);
  $("request-error").hidden = true;
  $("results").replaceChildren();
  const started = performance.now();
  let answer;
  try {
    const response = await fetch(`/v2/models/${kind}/infer`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    answer = await response.json();
    $("latency").textContent = `${response.status} in ${Math.round(performance.now() - started)} ms`;
    $("raw").textContent = JSON.stringify(answer, null, 2);
    if (!response.ok) {
      $("request-error").textContent = answer.error || `HTTP ${response.status}`;
      $("request-error").hidden = false;
      return;
    }
  } catch (e) {
    $("request-error").textContent = "the server did not answer";
    $("request-error").hidden = false;
    return;
  }
  const items = answer.outputs[0].data.map((s) => JSON.parse(s));
  items.forEach((item, i) => $("results").append(renderResult(texts[i], item, i, kind)));
  $("results").dataset.done = "1";
}

function switchTask() {
  $("uie-options").hidden = task() !== "uie";
}

$("ask").addEventListener("submit", ask);
for (const radio of document.querySelectorAll("input[name=task]")) radio.addEventListener("change", switchTask);
$("copy-curl").addEventListener("click", () => navigator.clipboard?.writeText($("curl").textContent));
showModels();
