import { register } from 'node:module'
register('./fake-webrtc.mjs', import.meta.url)
