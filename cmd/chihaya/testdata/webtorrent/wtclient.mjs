// A leecher on the WebTorrent library that webtorrent-cli runs on, driven by swarm_test.go.
//
// webtorrent-cli has no flags that turn DHT, local service discovery, peer exchange or
// UPnP/NAT-PMP off, so this script gives the same library those options instead. It downloads
// one torrent into --save on 127.0.0.1, then seeds it until it is killed (SIGTERM: it
// announces stopped and exits). The tracker is its only way to find peers. It logs tracker
// announces and warnings, peer connections, completion and a status line once a second.
//
// Usage: node wtclient.mjs --torrent FILE --save DIR --port PORT
//        node wtclient.mjs --version
//
// Install its dependencies first, in this directory: npm install --ignore-scripts --no-save

import fs from 'node:fs'
import { createRequire, register } from 'node:module'
import net from 'node:net'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'

// WebTorrent loads its WebRTC support at start, and that needs a native module which
// `npm install --ignore-scripts` leaves unbuilt. The test uses no WebRTC (no ws:// tracker, no
// browser peers), so no-webrtc.mjs hands WebTorrent a stand-in that fails only if used.
register('./no-webrtc.mjs', import.meta.url)
// The WebTorrent that webtorrent-cli runs: resolved from webtorrent-cli's own directory.
const cliPackage = new URL('./node_modules/webtorrent-cli/package.json', import.meta.url)
if (!fs.existsSync(cliPackage)) {
  console.error(`webtorrent-cli is not installed in ${new URL('.', import.meta.url).pathname}`)
  process.exit(1)
}
const cli = JSON.parse(fs.readFileSync(cliPackage, 'utf8'))
const { default: WebTorrent } = await import(pathToFileURL(createRequire(cliPackage).resolve('webtorrent')).href)

const { values: args } = parseArgs({
  options: {
    torrent: { type: 'string' },
    save: { type: 'string' },
    port: { type: 'string' },
    version: { type: 'boolean' }
  }
})
if (args.version) {
  console.log(`webtorrent-cli ${cli.version} (webtorrent ${WebTorrent.VERSION}, node ${process.versions.node})`)
  process.exit(0)
}
for (const name of ['torrent', 'save', 'port']) {
  if (!args[name]) {
    console.error(`usage: node wtclient.mjs --torrent FILE --save DIR --port PORT (missing --${name})`)
    process.exit(2)
  }
}
const port = Number(args.port)

function log (msg) {
  console.log(`${(Date.now() / 1000).toFixed(3)} ${msg}`)
}

// WebTorrent listens for peers on every interface and takes no address to bind; the test keeps
// to loopback, so a listen on a bare port is made a listen on 127.0.0.1.
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (...a) {
  if (typeof a[0] === 'number' && (a.length === 1 || typeof a[1] === 'function')) {
    a.splice(1, 0, '127.0.0.1')
  }
  return listen.apply(this, a)
}

const client = new WebTorrent({
  torrentPort: port,
  // Only the tracker may introduce peers.
  dht: false,
  lsd: false,
  utPex: false,
  natUpnp: false,
  natPmp: false,
  webSeeds: false,
  // Plain TCP, as for the other clients.
  utp: false
})
client.on('error', err => {
  log(`client error: ${err.stack || err}`)
  process.exit(1)
})

const torrent = client.add(fs.readFileSync(args.torrent), { path: args.save })
torrent.on('infoHash', () => log(`added ${torrent.name || ''}, info hash ${torrent.infoHash}, downloading on port ${port}`))
torrent.on('trackerAnnounce', () => log('tracker announce answered'))
torrent.on('warning', err => log(`warning: ${err.message || err}`))
torrent.on('error', err => {
  log(`torrent error: ${err.stack || err}`)
  process.exit(1)
})
torrent.on('wire', (wire, addr) => log(`peer connected: ${addr}`))
torrent.on('done', () => log(`done: ${torrent.downloaded} bytes verified`))

const status = setInterval(() => {
  log(`status progress=${(torrent.progress * 100).toFixed(1)}% peers=${torrent.numPeers} ` +
    `down=${torrent.downloaded} up=${torrent.uploaded} done=${torrent.done}`)
}, 1000)

// On SIGTERM it tells the tracker it stopped, bounded by a second so that the test's grace
// period is never used up.
process.once('SIGTERM', () => {
  clearInterval(status)
  log('SIGTERM: stopping')
  setTimeout(() => process.exit(0), 1000).unref()
  client.destroy(() => process.exit(0))
})
