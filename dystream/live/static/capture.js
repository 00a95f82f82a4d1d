// AudioWorklet: the microphone's samples, posted to the page in chunks of about 20 ms.
class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.chunk = Math.round(sampleRate / 50);
    this.buffer = new Float32Array(this.chunk);
    this.filled = 0;
  }
  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (input) {
      let offset = 0;
      while (offset < input.length) {
        const n = Math.min(input.length - offset, this.chunk - this.filled);
        this.buffer.set(input.subarray(offset, offset + n), this.filled);
        this.filled += n;
        offset += n;
        if (this.filled === this.chunk) {
          this.port.postMessage(this.buffer.slice(0));
          this.filled = 0;
        }
      }
    }
    return true;
  }
}
registerProcessor("capture", Capture);
