// Two bittorrent-tracker clients (the reference's own) announce one torrent through Chihaya's
// WebSocket tracker, each on its own socket (/announce and /): B's offers reach A, A's answer
// reaches B, then A scrapes and both stop. Each step is printed as one JSON line for the Go test.
//
//   node --import ./register.mjs btclient.mjs ws://127.0.0.1:PORT
import Client from 'bittorrent-tracker'

const base = process.argv[2]
if (!base) {
  console.error('usage: btclient.mjs ws://host:port')
  process.exit(2)
}
const infoHash = 'aa'.repeat(20)
const idA = Buffer.from('-WW0001-aaaaaaaaaaaa').toString('hex')
const idB = Buffer.from('-WW0001-bbbbbbbbbbbb').toString('hex')
const out = (who, what, data) => console.log(JSON.stringify({ who, what, ...data }))
const timer = setTimeout(() => { out('-', 'timeout', {}); process.exit(1) }, 20000)

function client (who, peerId, url) {
  const c = new Client({ infoHash, peerId, announce: [url], port: 6881, getAnnounceOpts: () => ({ uploaded: 0, downloaded: 0, left: who === 'A' ? 0 : 100 }) })
  c.on('error', err => { out(who, 'error', { message: err.message }); process.exit(1) })
  c.on('warning', err => out(who, 'warning', { message: err.message }))
  c.on('update', d => out(who, 'update', { complete: d.complete, incomplete: d.incomplete, interval: d.interval }))
  c.on('scrape', d => out(who, 'scrape', { complete: d.complete, incomplete: d.incomplete, downloaded: d.downloaded }))
  c.on('peer', p => {
    out(who, 'peer', { id: p.id })
    p.on('error', () => {})
  })
  return c
}

const a = client('A', idA, base + '/announce')
let b
a.once('update', () => {
  b = client('B', idB, base + '/')
  b.once('peer', () => {
    a.once('scrape', () => {
      a.stop()
      b.stop()
      setTimeout(() => {
        a.destroy()
        b.destroy()
        clearTimeout(timer)
        out('-', 'done', {})
        process.exit(0)
      }, 200)
    })
    a.scrape()
  })
  b.start()
})
a.start()
