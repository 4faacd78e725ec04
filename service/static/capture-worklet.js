// Runs on the audio thread: hands every 128-sample block of the microphone to the page unchanged.
class VoicelockCapture extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) this.port.postMessage(channel.slice(0));
    return true;
  }
}
registerProcessor("voicelock-capture", VoicelockCapture);
