// The reference WebSocket tracker (bittorrent-tracker's Server, WebSocket only) on a port, for
// bench/cmd/wsbench's side-by-side runs: node refserver.mjs PORT
import { Server } from 'bittorrent-tracker'

const port = Number(process.argv[2])
const server = new Server({ udp: false, http: false, ws: true, stats: false })
server.on('error', err => { console.error(err.message); process.exit(1) })
server.on('warning', () => {})
server.listen(port, '127.0.0.1', () => console.log('listening ' + port))
process.on('SIGTERM', () => server.close(() => process.exit(0)))
