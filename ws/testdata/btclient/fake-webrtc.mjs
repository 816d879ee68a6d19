// Module resolution hook for btclient.mjs: the WebRTC module the tracker client's simple-peer
// imports (webrtc-polyfill, on the native node-datachannel, unbuilt under --ignore-scripts)
// resolves to a stand-in that makes SDP offers and answers and never connects. The test checks
// the tracker's signalling, not WebRTC.

const standIn = 'data:text/javascript,' + encodeURIComponent(`
let n = 0
class FakeChannel {
  constructor (label) { this.label = label; this.readyState = 'connecting'; this.bufferedAmount = 0 }
  send () {}
  close () { this.readyState = 'closed' }
}
export class RTCPeerConnection {
  constructor () {
    this.id = ++n
    this.signalingState = 'stable'
    this.iceConnectionState = 'new'
    this.iceGatheringState = 'new'
    this.connectionState = 'new'
    this.localDescription = null
    this.remoteDescription = null
  }
  createDataChannel (label) { return new FakeChannel(label) }
  async createOffer () { return { type: 'offer', sdp: 'v=0 fake offer ' + process.pid + '.' + this.id } }
  async createAnswer () { return { type: 'answer', sdp: 'v=0 fake answer ' + process.pid + '.' + this.id + ' to ' + this.remoteDescription.sdp } }
  async setLocalDescription (d) {
    this.localDescription = d
    this.iceGatheringState = 'complete'
    setTimeout(() => { if (this.onicecandidate) this.onicecandidate({ candidate: null }) }, 0)
  }
  async setRemoteDescription (d) { this.remoteDescription = d }
  async addIceCandidate () {}
  getSenders () { return [] }
  getTransceivers () { return [] }
  async getStats () { return new Map() }
  close () { this.signalingState = 'closed' }
}
export class RTCSessionDescription { constructor (d) { this.type = d.type; this.sdp = d.sdp } }
export class RTCIceCandidate { constructor (c) { Object.assign(this, c) } }
`)

export async function resolve (specifier, context, next) {
  if (specifier === 'webrtc-polyfill') {
    return { url: standIn, shortCircuit: true }
  }
  return next(specifier, context)
}
