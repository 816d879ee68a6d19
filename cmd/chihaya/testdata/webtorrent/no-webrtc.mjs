// Module resolution hook for wtclient.mjs: the WebRTC module WebTorrent imports
// (webrtc-polyfill, on the native node-datachannel, unbuilt under --ignore-scripts) resolves to
// a stand-in whose classes throw when constructed. The swarm test never opens a WebRTC peer.

const standIn = 'data:text/javascript,' + encodeURIComponent(`
function unavailable () {
  throw new Error('WebRTC is not available here: node-datachannel was installed without its native part')
}
export class RTCPeerConnection { constructor () { unavailable() } }
export class RTCSessionDescription { constructor () { unavailable() } }
export class RTCIceCandidate { constructor () { unavailable() } }
`)

export async function resolve (specifier, context, next) {
  if (specifier === 'webrtc-polyfill') {
    return { url: standIn, shortCircuit: true }
  }
  return next(specifier, context)
}
