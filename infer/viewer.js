// liverseg report viewer: draws the slices a payload carries (infer/viewer.py) on canvases.
// Axial slices are JPEGs decoded into one volume; coronal and sagittal planes are resliced from it.
// The overlay codes (bit 0 prediction, bit 1 truth) come zlib-compressed and are inflated here.
(() => {
  "use strict";
  const PLANES = ["axial", "coronal", "sagittal"];

  function bytes(b64) {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  async function inflate(b64) {
    const stream = new Blob([bytes(b64)]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  class Viewer {
    constructor(root, data) {
      this.root = root;
      this.d = data;
      this.volume = data.kind === "volume";
      this.n = data.frames.length;
      this.alpha = 0.5;
      this.on = true;
      this.lines = this.volume;
      this.pos = { axial: data.start[0], coronal: data.start[1], sagittal: data.start[2] };
      this.colors = {};
      for (const [code, rgb] of Object.entries(data.colors)) this.colors[code] = rgb;
      // where each frame's gray and codes start (2D frames differ in size)
      this.offsets = [];
      let at = 0;
      for (const [w, h] of data.sizes) {
        this.offsets.push(at);
        at += w * h;
      }
      this.gray = new Uint8Array(at);
      this.decoded = new Uint8Array(this.n);
      this.scratch = document.createElement("canvas");
      this.scratchCtx = this.scratch.getContext("2d", { willReadFrequently: true });
      this.planes = {};
      for (const fig of root.querySelectorAll(".lsv-plane")) {
        const plane = fig.dataset.plane;
        this.planes[plane] = {
          fig,
          canvas: fig.querySelector("canvas"),
          slider: fig.querySelector(".lsv-slider"),
          label: fig.querySelector(".lsv-label"),
        };
      }
      if (!this.volume) root.querySelector(".lsv-lines").parentElement.hidden = true;
    }

    size(plane) {
      const [w, h] = this.d.sizes[this.volume ? 0 : this.pos.axial];
      if (plane === "axial") return [w, h];
      return plane === "coronal" ? [w, this.n] : [h, this.n];
    }

    async decode(k) {
      if (this.decoded[k]) return;
      const [w, h] = this.d.sizes[k];
      const bmp = await createImageBitmap(new Blob([bytes(this.d.frames[k])], { type: "image/jpeg" }));
      if (this.scratch.width !== w || this.scratch.height !== h) {
        this.scratch.width = w;
        this.scratch.height = h;
      }
      this.scratchCtx.drawImage(bmp, 0, 0);
      bmp.close();
      const rgba = this.scratchCtx.getImageData(0, 0, w, h).data;
      const base = this.offsets[k];
      for (let i = 0, j = 0; i < w * h; i++, j += 4) this.gray[base + i] = rgba[j];
      this.decoded[k] = 1;
    }

    // the value index (into gray and codes) of pixel (x, y) of a plane's image
    indexer(plane) {
      const [w, h] = this.d.sizes[this.volume ? 0 : this.pos.axial];
      const n = this.n;
      if (plane === "axial") {
        const base = this.offsets[this.pos.axial];
        return (x, y) => base + y * w + x;
      }
      if (plane === "coronal") {
        const r = this.pos.coronal;
        return (x, y) => (n - 1 - y) * w * h + r * w + x;
      }
      const c = this.pos.sagittal;
      return (x, y) => (n - 1 - y) * w * h + x * w + c;
    }

    draw(plane) {
      const p = this.planes[plane];
      if (!p) return;
      const [pw, ph] = this.size(plane);
      const cv = p.canvas;
      if (cv.width !== pw || cv.height !== ph) {
        cv.width = pw;
        cv.height = ph;
      }
      if (this.volume) {
        const sp = this.d.spacing_mm; // slice, row, column mm
        const mmW = plane === "sagittal" ? pw * sp[1] : pw * sp[2];
        const mmH = plane === "axial" ? ph * sp[1] : ph * sp[0];
        cv.style.aspectRatio = `${mmW} / ${mmH}`;
      } else {
        cv.style.aspectRatio = `${pw} / ${ph}`;
      }
      const ctx = cv.getContext("2d", { willReadFrequently: true });
      const img = ctx.createImageData(pw, ph);
      const out = img.data;
      const at = this.indexer(plane);
      const a = this.on ? this.alpha : 0;
      const codes = this.codes;
      const colors = this.colors;
      for (let y = 0; y < ph; y++) {
        for (let x = 0; x < pw; x++) {
          const i = at(x, y);
          const g = this.gray[i];
          const o = 4 * (y * pw + x);
          const c = codes && a > 0 ? colors[codes[i]] : undefined;
          if (c) {
            out[o] = a * c[0] + (1 - a) * g;
            out[o + 1] = a * c[1] + (1 - a) * g;
            out[o + 2] = a * c[2] + (1 - a) * g;
          } else {
            out[o] = out[o + 1] = out[o + 2] = g;
          }
          out[o + 3] = 255;
        }
      }
      ctx.putImageData(img, 0, 0);
      if (this.lines) this.crosshair(plane, ctx, pw, ph);
      const idx = this.pos[plane];
      p.slider.value = String(idx);
      p.label.textContent = (this.d.labels[plane] || [])[idx] || "";
    }

    crosshair(plane, ctx, pw, ph) {
      const k = this.n - 1 - this.pos.axial;
      const [x, y] = {
        axial: [this.pos.sagittal, this.pos.coronal],
        coronal: [this.pos.sagittal, k],
        sagittal: [this.pos.coronal, k],
      }[plane];
      ctx.strokeStyle = "rgba(255, 214, 0, 0.55)";
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(x + 0.5, 0);
      ctx.lineTo(x + 0.5, ph);
      ctx.moveTo(0, y + 0.5);
      ctx.lineTo(pw, y + 0.5);
      ctx.stroke();
    }

    drawAll() {
      for (const plane of PLANES) this.draw(plane);
    }

    async go(plane, index) {
      const max = Number(this.planes[plane].slider.max);
      this.pos[plane] = Math.max(0, Math.min(max, index));
      if (plane === "axial") await this.decode(this.pos.axial);
      if (this.volume) this.drawAll();
      else this.draw("axial");
    }

    // a click on one plane moves the other two to that point
    pick(plane, ev) {
      if (!this.volume) return;
      const cv = this.planes[plane].canvas;
      const box = cv.getBoundingClientRect();
      const x = Math.floor(((ev.clientX - box.left) / box.width) * cv.width);
      const y = Math.floor(((ev.clientY - box.top) / box.height) * cv.height);
      if (plane === "axial") Object.assign(this.pos, { sagittal: x, coronal: y });
      if (plane === "coronal") Object.assign(this.pos, { sagittal: x, axial: this.n - 1 - y });
      if (plane === "sagittal") Object.assign(this.pos, { coronal: x, axial: this.n - 1 - y });
      this.go("axial", this.pos.axial);
    }

    bind() {
      const root = this.root;
      root.querySelector(".lsv-on").addEventListener("change", (e) => {
        this.on = e.target.checked;
        this.volume ? this.drawAll() : this.draw("axial");
      });
      root.querySelector(".lsv-alpha").addEventListener("input", (e) => {
        this.alpha = Number(e.target.value) / 100;
        this.volume ? this.drawAll() : this.draw("axial");
      });
      root.querySelector(".lsv-lines").addEventListener("change", (e) => {
        this.lines = e.target.checked;
        this.drawAll();
      });
      for (const [plane, p] of Object.entries(this.planes)) {
        p.slider.addEventListener("input", () => this.go(plane, Number(p.slider.value)));
        p.canvas.addEventListener(
          "wheel",
          (e) => {
            e.preventDefault();
            this.go(plane, this.pos[plane] + (e.deltaY > 0 ? 1 : -1));
          },
          { passive: false },
        );
        p.canvas.addEventListener("keydown", (e) => {
          const step = { ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1, PageUp: 10, PageDown: -10 }[e.key];
          if (step === undefined) return;
          e.preventDefault();
          this.go(plane, this.pos[plane] + step);
        });
        p.canvas.addEventListener("click", (e) => {
          p.canvas.focus();
          this.pick(plane, e);
        });
      }
    }

    async start() {
      this.codes = await inflate(this.d.codes);
      await this.decode(this.pos.axial);
      this.bind();
      this.volume ? this.drawAll() : this.draw("axial");
      this.root.dataset.firstDraw = String(performance.now());
      if (!this.volume) {
        this.root.dataset.readyAt = this.root.dataset.firstDraw;
        this.root.dataset.ready = "1";
        return;
      }
      // the rest outwards from the first slice, so the slices near it are there first
      const k0 = this.pos.axial;
      for (let step = 1; step < this.n; step++) {
        for (const k of [k0 + step, k0 - step]) if (k >= 0 && k < this.n) await this.decode(k);
        if (step % 48 === 0) this.drawAll();
      }
      this.drawAll();
      this.root.dataset.readyAt = String(performance.now());
      this.root.dataset.ready = "1";
    }
  }

  function init() {
    for (const root of document.querySelectorAll(".lsv")) {
      const src = document.getElementById(root.dataset.src);
      if (!src) continue;
      const viewer = new Viewer(root, JSON.parse(src.textContent));
      root.viewer = viewer;
      viewer.start().catch((err) => {
        root.dataset.error = String(err);
        const p = document.createElement("p");
        p.className = "warn";
        p.textContent = `The viewer could not start in this browser: ${err}`;
        root.prepend(p);
      });
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
