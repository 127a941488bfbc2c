/* The page of `vqaudio serve` (issue 30): pick, record or make a clip, choose the codebooks, then tokenize and
 * resynthesize it with the service's JSON endpoints and show both sides.
 *
 * Everything happens here, with no library: the browser decodes the clip (WebAudio, resampled to the model's
 * rate by an OfflineAudioContext), the page sends it as a float WAV in {"instances": [{"b64": ...}]} to
 * /v1/tokenize, sends the codes back to /v1/resynth, reads the WAV it returns, and draws both spectrograms
 * with its own FFT. The service serves JSON and WAV only; it draws nothing.
 *
 * For headless browsers: /?selftest runs the synthetic clip at once; <body data-state> goes loading -> ready
 * -> busy -> done (or error), and the results are also set as data-* attributes of #results.
 *
 * The pure functions (WAV, base64, FFT, spectrogram, the synthetic clip) are exported to Node for tests.
 */
"use strict";

const SPECTROGRAM_FFT = 512;
const SPECTROGRAM_RANGE_DB = 90;
const SPECTROGRAM_MAX_HZ = 8000;

// ------------------------------------------------------------------------------------------------ WAV
/** Mono float samples -> the bytes of a WAV: 32-bit float (what the page sends, no rounding) or 16-bit PCM
 * (what it plays: every browser's player reads it). */
function encodeWav(samples, sampleRate, pcm16 = false) {
  const width = pcm16 ? 2 : 4;
  const bytes = new Uint8Array(44 + samples.length * width);
  const view = new DataView(bytes.buffer);
  const text = (offset, value) => {
    for (let i = 0; i < value.length; i++) view.setUint8(offset + i, value.charCodeAt(i));
  };
  text(0, "RIFF");
  view.setUint32(4, 36 + samples.length * width, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, pcm16 ? 1 : 3, true); // WAVE_FORMAT_PCM or WAVE_FORMAT_IEEE_FLOAT
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, sampleRate, true);
  view.setUint32(28, sampleRate * width, true);
  view.setUint16(32, width, true);
  view.setUint16(34, 8 * width, true);
  text(36, "data");
  view.setUint32(40, samples.length * width, true);
  for (let i = 0; i < samples.length; i++) {
    if (pcm16) view.setInt16(44 + i * 2, Math.round(32767 * Math.max(-1, Math.min(1, samples[i]))), true);
    else view.setFloat32(44 + i * 4, samples[i], true);
  }
  return bytes;
}

/** The bytes of a 16-bit PCM or 32-bit float WAV -> {samples: mono Float32Array, sampleRate}. */
function decodeWav(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const tag = (offset) => String.fromCharCode(...bytes.subarray(offset, offset + 4));
  if (bytes.length < 12 || tag(0) !== "RIFF" || tag(8) !== "WAVE") throw new Error("not a WAV file");
  let format = null;
  for (let offset = 12; offset + 8 <= bytes.length; ) {
    const id = tag(offset);
    const size = view.getUint32(offset + 4, true);
    const body = offset + 8;
    if (id === "fmt ") {
      let code = view.getUint16(body, true);
      if (code === 0xfffe) code = view.getUint16(body + 24, true); // WAVE_FORMAT_EXTENSIBLE: its sub-format
      format = {
        code,
        channels: view.getUint16(body + 2, true),
        sampleRate: view.getUint32(body + 4, true),
        bits: view.getUint16(body + 14, true),
      };
    } else if (id === "data") {
      if (format === null) throw new Error("WAV data before its format");
      const { code, channels, sampleRate, bits } = format;
      const width = bits / 8;
      const frames = Math.floor(Math.min(size, bytes.length - body) / (width * channels));
      const samples = new Float32Array(frames);
      for (let frame = 0; frame < frames; frame++) {
        let sum = 0;
        for (let channel = 0; channel < channels; channel++) {
          const at = body + (frame * channels + channel) * width;
          if (code === 3 && bits === 32) sum += view.getFloat32(at, true);
          else if (code === 1 && bits === 16) sum += view.getInt16(at, true) / 32768;
          else throw new Error(`unsupported WAV samples (format ${code}, ${bits} bits)`);
        }
        samples[frame] = sum / channels;
      }
      return { samples, sampleRate };
    }
    offset = body + size + (size % 2); // chunks are padded to even sizes
  }
  throw new Error("WAV without data");
}

// ------------------------------------------------------------------------------------------------ base64
function toBase64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

function fromBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

// ------------------------------------------------------------------------------------------------ spectra
/** In-place radix-2 FFT of (re, im), length a power of two. */
function fft(re, im) {
  const n = re.length;
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) {
      [re[i], re[j]] = [re[j], re[i]];
      [im[i], im[j]] = [im[j], im[i]];
    }
  }
  for (let size = 2; size <= n; size <<= 1) {
    const step = (-2 * Math.PI) / size;
    for (let start = 0; start < n; start += size) {
      for (let k = 0; k < size / 2; k++) {
        const cos = Math.cos(step * k);
        const sin = Math.sin(step * k);
        const a = start + k;
        const b = a + size / 2;
        const tr = re[b] * cos - im[b] * sin;
        const ti = re[b] * sin + im[b] * cos;
        re[b] = re[a] - tr;
        im[b] = im[a] - ti;
        re[a] += tr;
        im[a] += ti;
      }
    }
  }
}

/** Samples -> {frames, bins, db: Float32Array [frames * bins]}: Hann-windowed power in dB every 10 ms, up to
 * SPECTROGRAM_MAX_HZ. */
function spectrogram(samples, sampleRate, size = SPECTROGRAM_FFT) {
  const hop = Math.max(1, Math.round(sampleRate / 100));
  const bins = Math.min(size / 2 + 1, Math.floor((SPECTROGRAM_MAX_HZ * size) / sampleRate) + 1);
  const frames = Math.max(1, Math.ceil(samples.length / hop));
  const window = new Float32Array(size);
  for (let i = 0; i < size; i++) window[i] = 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / size);
  const db = new Float32Array(frames * bins);
  const re = new Float64Array(size);
  const im = new Float64Array(size);
  for (let frame = 0; frame < frames; frame++) {
    const centre = frame * hop;
    for (let i = 0; i < size; i++) {
      const at = centre - size / 2 + i;
      re[i] = at >= 0 && at < samples.length ? samples[at] * window[i] : 0;
      im[i] = 0;
    }
    fft(re, im);
    for (let bin = 0; bin < bins; bin++) {
      db[frame * bins + bin] = 10 * Math.log10(re[bin] * re[bin] + im[bin] * im[bin] + 1e-12);
    }
  }
  return { frames, bins, db };
}

/** A dark-to-bright colour for v in [0, 1]. */
function colour(v) {
  const stops = [
    [0, 0, 4],
    [80, 18, 123],
    [182, 54, 121],
    [251, 136, 97],
    [252, 253, 191],
  ];
  const x = Math.min(Math.max(v, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const t = x - i;
  return stops[i].map((low, c) => Math.round(low + (stops[i + 1][c] - low) * t));
}

/** Draw a spectrogram on a canvas (one pixel per frame and bin, low frequencies at the bottom), its loudest
 * bin at full brightness; returns the peak in dB. */
function drawSpectrogram(canvas, spec, peak = null) {
  const { frames, bins, db } = spec;
  const top = peak === null ? db.reduce((a, b) => Math.max(a, b), -Infinity) : peak;
  canvas.width = frames;
  canvas.height = bins;
  const context = canvas.getContext("2d");
  const image = context.createImageData(frames, bins);
  for (let frame = 0; frame < frames; frame++) {
    for (let bin = 0; bin < bins; bin++) {
      const [r, g, b] = colour(1 + (db[frame * bins + bin] - top) / SPECTROGRAM_RANGE_DB);
      const at = ((bins - 1 - bin) * frames + frame) * 4;
      image.data[at] = r;
      image.data[at + 1] = g;
      image.data[at + 2] = b;
      image.data[at + 3] = 255;
    }
  }
  context.putImageData(image, 0, 0);
  return top;
}

// ------------------------------------------------------------------------------------------------ a clip
/** seconds of a synthetic vowel: harmonics of a gliding 120-160 Hz pitch through two formants. */
function syntheticClip(sampleRate, seconds = 1.5) {
  const samples = new Float32Array(Math.round(sampleRate * seconds));
  let phase = 0;
  for (let i = 0; i < samples.length; i++) {
    const t = i / sampleRate;
    const pitch = 140 + 20 * Math.sin(2 * Math.PI * 1.5 * t);
    phase += (2 * Math.PI * pitch) / sampleRate;
    let value = 0;
    for (let h = 1; h * pitch < sampleRate / 2 && h <= 40; h++) {
      const f = h * pitch;
      const gain = Math.exp(-(((f - 700) / 180) ** 2)) + 0.6 * Math.exp(-(((f - 1200) / 250) ** 2));
      value += gain * Math.sin(h * phase);
    }
    const envelope = Math.min(1, t / 0.05, (seconds - t) / 0.05);
    samples[i] = 0.2 * envelope * value;
  }
  return samples;
}

// ------------------------------------------------------------------------------------------------ the page
function startPage() {
  const $ = (id) => document.getElementById(id);
  const page = { info: null, clip: null, urls: [] };

  function setState(state, message) {
    document.body.dataset.state = state;
    $("status").dataset.state = state;
    $("status").textContent = message;
    $("run").disabled = state === "busy" || state === "loading" || page.clip === null;
  }

  async function call(path, request) {
    const options = request === undefined ? {} : {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request),
    };
    const response = await fetch(path, options);
    const value = await response.json().catch(() => null);
    if (!response.ok) {
      const message = value && value.error ? value.error.message : response.statusText;
      throw new Error(`${path.split("?")[0]}: ${response.status} ${message}`);
    }
    return value;
  }

  function useClip(samples, name) {
    page.clip = { samples, name };
    const seconds = samples.length / page.info.model.sample_rate;
    setState("ready", `${name}: ${seconds.toFixed(2)} s. Choose the codebooks and press the button.`);
  }

  async function decodeToModelRate(buffer) {
    const rate = page.info.model.sample_rate;
    const decoded = await new OfflineAudioContext(1, 1, rate).decodeAudioData(buffer);
    const mono = new Float32Array(decoded.length);
    for (let channel = 0; channel < decoded.numberOfChannels; channel++) {
      const data = decoded.getChannelData(channel);
      for (let i = 0; i < mono.length; i++) mono[i] += data[i] / decoded.numberOfChannels;
    }
    return mono;
  }

  function objectUrl(bytes) {
    const url = URL.createObjectURL(new Blob([bytes], { type: "audio/wav" }));
    page.urls.push(url);
    return url;
  }

  async function run() {
    const nQ = Number($("n-q").value);
    const rate = page.info.model.sample_rate;
    const wav = encodeWav(page.clip.samples, rate);
    setState("busy", `Tokenizing and resynthesizing at ${nQ} codebook(s)\u2026`);
    const started = performance.now();
    try {
      const tokens = (await call(`/v1/tokenize?n_q=${nQ}`, { instances: [{ b64: toBase64(wav) }] })).predictions[0];
      const instance = { codes: tokens.codes, num_samples: tokens.num_samples };
      const audio = (await call("/v1/resynth", { instances: [instance] })).predictions[0];
      const elapsed = (performance.now() - started) / 1000;
      const resynthBytes = fromBase64(audio.b64);
      const resynth = decodeWav(resynthBytes);

      page.urls.splice(0).forEach((url) => URL.revokeObjectURL(url));
      $("original-audio").src = objectUrl(encodeWav(page.clip.samples, rate, true));
      $("resynth-audio").src = objectUrl(resynthBytes);
      const peak = drawSpectrogram($("original-spectrogram"), spectrogram(page.clip.samples, rate));
      drawSpectrogram($("resynth-spectrogram"), spectrogram(resynth.samples, resynth.sampleRate), peak);

      const rows = tokens.codes.length;
      const count = rows * tokens.frames;
      const pitch = tokens.pitch_rows ? "the pitch row and " : "";
      $("stat-seconds").textContent = `${tokens.seconds.toFixed(2)} s at ${tokens.sample_rate} Hz`;
      $("stat-frames").textContent = `${tokens.frames} at ${tokens.frame_rate} per second`;
      $("stat-tokens").textContent = `${count} (${rows} per frame: ${pitch}${tokens.n_q} codebook(s))`;
      $("stat-kbps").textContent = `${tokens.kbps.toFixed(2)} kbps`;
      $("stat-time").textContent = `${elapsed.toFixed(2)} s (both requests)`;
      Object.assign($("results").dataset, {
        tokens: String(count),
        frames: String(tokens.frames),
        kbps: String(tokens.kbps),
        nQ: String(tokens.n_q),
        resynthSamples: String(resynth.samples.length),
      });
      $("results").hidden = false;
      setState("done", `Done: ${count} tokens, ${tokens.kbps.toFixed(2)} kbps.`);
    } catch (error) {
      setState("error", String(error.message || error));
    }
  }

  async function record() {
    const button = $("record");
    if (page.recorder) {
      page.recorder.stop();
      return;
    }
    if (!navigator.mediaDevices || !window.MediaRecorder) {
      setState("error", "Recording needs a browser with MediaRecorder, on https or on this machine (localhost).");
      return;
    }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      const chunks = [];
      const recorder = new MediaRecorder(stream);
      page.recorder = recorder;
      recorder.ondataavailable = (event) => chunks.push(event.data);
      recorder.onstop = async () => {
        stream.getTracks().forEach((track) => track.stop());
        page.recorder = null;
        button.classList.remove("recording");
        button.textContent = "Record";
        try {
          const buffer = await new Blob(chunks).arrayBuffer();
          useClip(await decodeToModelRate(buffer), "the recording");
        } catch (error) {
          setState("error", `The recording cannot be decoded: ${error.message || error}`);
        }
      };
      recorder.start();
      button.classList.add("recording");
      button.textContent = "Stop";
      setState("busy", "Recording\u2026 press Stop to finish.");
      $("record").disabled = false;
    } catch (error) {
      setState("error", `No microphone: ${error.message || error}`);
    }
  }

  async function start() {
    try {
      page.info = await call("/v1/info");
    } catch (error) {
      setState("error", String(error.message || error));
      return;
    }
    const model = page.info.model;
    $("model").textContent =
      `Model ${model.name} (${model.hash.slice(0, 12)}): ${model.sample_rate} Hz, ${model.frame_rate} frames/s, ` +
      `${model.num_codebooks} codebooks of ${model.codebook_size}` + (model.pitch_rows ? ", and a pitch row." : ".");
    $("max-seconds").textContent = `${page.info.limits.max_seconds} s`;
    for (const { n_q: nQ, kbps } of model.bitrates) {
      const option = new Option(`${nQ}: ${kbps.toFixed(2)} kbps`, String(nQ));
      $("n-q").append(option);
    }
    $("n-q").value = String(model.num_codebooks);
    $("file").addEventListener("change", async (event) => {
      const file = event.target.files[0];
      if (!file) return;
      setState("busy", `Decoding ${file.name}\u2026`);
      try {
        useClip(await decodeToModelRate(await file.arrayBuffer()), file.name);
      } catch (error) {
        setState("error", `${file.name} cannot be decoded by this browser: ${error.message || error}`);
      }
    });
    $("record").addEventListener("click", record);
    $("synthetic").addEventListener("click", () => useClip(syntheticClip(model.sample_rate), "a synthetic vowel"));
    $("run").addEventListener("click", run);
    setState("ready", "Upload, record or make a clip.");
    if (new URLSearchParams(location.search).has("selftest")) {
      useClip(syntheticClip(model.sample_rate), "a synthetic vowel");
      await run();
    }
  }

  window.vqaudioPage = { run, useClip };
  start();
}

if (typeof module !== "undefined" && module.exports) {
  module.exports = { encodeWav, decodeWav, toBase64, fromBase64, fft, spectrogram, syntheticClip, colour };
} else if (typeof document !== "undefined") {
  startPage();
}
