// Recording one take: microphone → countdown → wait for the voice → a fixed-length clip → 16-bit WAV.
//
// Why not record a fixed window after the countdown? People start speaking late, and a window that
// cuts a word in half enrolls half a word. The take starts where the voice starts (after some quiet,
// never mid-word), keeps a short pre-roll, and lasts config.clip_seconds, as the training clips do.

const FRAME_S = 0.02; // levels are measured on 20 ms frames

/** An error whose message is a plain sentence for the person at the microphone. */
export class PageError extends Error {}

const dbfs = (sumSquares, n) => 10 * Math.log10(sumSquares / Math.max(n, 1) + 1e-12);

/** The microphone, opened raw: the browser's echo cancellation, noise suppression and gain
 *  control change the voice the model hears, so all three are off. */
export class Microphone {
  static async open() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new PageError("This browser cannot record here. Open the page on https:// or on localhost.");
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
    } catch (e) {
      if (e.name === "NotAllowedError" || e.name === "SecurityError") {
        throw new PageError("Microphone access was refused. Allow the microphone for this page and try again.");
      }
      if (e.name === "NotFoundError" || e.name === "OverconstrainedError") {
        throw new PageError("No microphone was found. Connect one and try again.");
      }
      throw new PageError(`The microphone could not be opened (${e.name}). Close other apps using it and try again.`);
    }
    const ctx = new AudioContext();
    await ctx.resume();
    await ctx.audioWorklet.addModule("capture-worklet.js");
    const source = ctx.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(ctx, "voicelock-capture");
    const mute = ctx.createGain(); // the graph must reach the speakers to run; at gain 0 nothing is heard
    mute.gain.value = 0;
    source.connect(node).connect(mute).connect(ctx.destination);
    return new Microphone(stream, ctx, node);
  }

  constructor(stream, ctx, node) {
    this.stream = stream;
    this.ctx = ctx;
    this.node = node;
    this.rate = ctx.sampleRate; // 44.1 or 48 kHz, whatever the device runs at: never assumed
  }

  close() {
    this.node.port.onmessage = null;
    this.stream.getTracks().forEach((t) => t.stop());
    this.ctx.close();
  }

  /** Records one take. `onLevel(db)` is called for every 20 ms frame (the level meter), and
   *  `onPhase(text)` with "3", "2", "1", then "Speak now" and "Recording". Resolves to the samples at
   *  this.rate. */
  record(cfg, onLevel, onPhase) {
    const frameLen = Math.max(1, Math.round(this.rate * FRAME_S));
    const countdownFrames = Math.round(cfg.countdown_seconds / FRAME_S);
    const listenFrames = Math.round(cfg.listen_seconds / FRAME_S);
    const quietFrames = Math.ceil(cfg.quiet_ms / 1000 / FRAME_S);
    const prerollLen = Math.round(cfg.preroll_seconds * this.rate);
    const clipLen = prerollLen + Math.round(cfg.clip_seconds * this.rate);

    return new Promise((resolve, reject) => {
      let frame = new Float32Array(frameLen), fill = 0, frames = 0;
      const countdownLevels = [];
      let threshold = cfg.speech_level_db, quietRun = 0, everQuiet = false;
      const history = []; // the last frames, enough for the pre-roll
      const historyFrames = Math.ceil(cfg.preroll_seconds / FRAME_S) + 1;
      const remember = (f) => {
        history.push(f);
        if (history.length > historyFrames) history.shift();
      };
      let clip = null, clipFill = 0;
      let listenStart = -1;
      const finish = (err, value) => {
        this.node.port.onmessage = null;
        err ? reject(err) : resolve(value);
      };
      const append = (samples) => {
        const n = Math.min(samples.length, clipLen - clipFill);
        clip.set(samples.subarray(0, n), clipFill);
        clipFill += n;
        if (clipFill >= clipLen) finish(null, clip);
      };

      const onFrame = (f) => {
        let ss = 0;
        for (let i = 0; i < f.length; i++) ss += f[i] * f[i];
        const level = dbfs(ss, f.length);
        onLevel(level);
        frames += 1;
        if (clip) return append(f);
        if (frames <= countdownFrames) {
          countdownLevels.push(level);
          const left = Math.ceil((countdownFrames - frames + 1) * FRAME_S);
          if ((frames - 1) % Math.round(1 / FRAME_S) === 0) onPhase(String(left));
          if (frames === countdownFrames) {
            // The room's level: a low percentile of the countdown, so a cough does not raise it.
            const sorted = [...countdownLevels].sort((a, b) => a - b);
            const floor = sorted[Math.floor(sorted.length * 0.2)];
            threshold = Math.max(cfg.speech_level_db, floor + cfg.noise_margin_db);
            for (let i = countdownLevels.length - 1; i >= 0 && countdownLevels[i] < threshold; i--) quietRun++;
          }
          remember(f);
          return;
        }
        if (listenStart < 0) {
          listenStart = frames;
          onPhase("Speak now");
        }
        if (level >= threshold && quietRun >= quietFrames) {
          onPhase("Recording");
          clip = new Float32Array(clipLen);
          const pre = new Float32Array(history.reduce((n, h) => n + h.length, 0));
          history.reduce((at, h) => (pre.set(h, at), at + h.length), 0);
          append(pre.subarray(Math.max(0, pre.length - prerollLen)));
          return append(f);
        }
        if (level < threshold) {
          quietRun += 1;
          if (quietRun >= quietFrames) everQuiet = true;
        } else {
          quietRun = 0;
        }
        remember(f);
        if (frames - listenStart >= listenFrames) {
          finish(new PageError(everQuiet
            ? `No voice was heard in ${cfg.listen_seconds} s. Say the word right after the countdown, a little louder or closer to the microphone.`
            : "It is too noisy here: the sound never went quiet before the word. Move somewhere quieter and try again."));
        }
      };

      this.node.port.onmessage = (event) => {
        const block = event.data;
        let i = 0;
        while (i < block.length) {
          const n = Math.min(block.length - i, frameLen - fill);
          frame.set(block.subarray(i, i + n), fill);
          fill += n;
          i += n;
          if (fill === frameLen) {
            const done = frame;
            frame = new Float32Array(frameLen);
            fill = 0;
            onFrame(done);
          }
        }
      };
    });
  }
}

/** Resamples with the browser's own resampler (an OfflineAudioContext at the target rate). */
export async function resample(samples, fromRate, toRate) {
  if (fromRate === toRate) return samples;
  const length = Math.round((samples.length * toRate) / fromRate);
  const offline = new OfflineAudioContext(1, length, toRate);
  const buffer = offline.createBuffer(1, samples.length, fromRate);
  buffer.copyToChannel(samples, 0);
  const source = offline.createBufferSource();
  source.buffer = buffer;
  source.connect(offline.destination);
  source.start();
  return (await offline.startRendering()).getChannelData(0);
}

/** 16-bit PCM mono WAV, the format every part of the service reads fastest. */
export function wavBlob(samples, rate) {
  const view = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const text = (offset, s) => [...s].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + samples.length * 2, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, rate, true);
  view.setUint32(28, rate * 2, true);
  view.setUint16(32, 2, true);
  view.setUint16(34, 16, true);
  text(36, "data");
  view.setUint32(40, samples.length * 2, true);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(44 + i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return new Blob([view], { type: "audio/wav" });
}
