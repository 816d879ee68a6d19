// Package fast is the HTTP frontend's fast path: the connections. It serves the two hot routes,
// GET announce and scrape (with or without a passkey), straight from the socket, and hands
// every other request, with its connection, to net/http.
//
// Its one seam with the tracker is Handler: a Request (route, passkey, raw query, user agent,
// real-IP header value, remote address) in, the answer's body appended to the connection's
// output out. Package http implements it, and keeps the routes, the parsing of queries, the
// resolving of client addresses and the bencoding; this package knows nothing of announces.
//
// What is where:
//
//	server.go    Server, Config, Handler, Request; Serve (plain TCP), ServeTLS, Shutdown
//	conn.go      one connection: read heads, have the Handler answer, write (keep-alive,
//	             pipelining, HTTP/1.0, 431 and 500 refusals)
//	head.go      ParseHead, the strict bounded request head parser
//	reqctx.go    RequestContext, the reused context of a connection's requests
//	raw_linux.go the raw accept loop: accept4, read, send and close on a plain TCP socket
//	             until it would block (raw_other.go elsewhere)
//	sock_linux.go the socket under a TLS connection from the raw accept loop: raw until it
//	             would block, then on the poller; a closing answer held for the close_notify
//	tls.go       the TLS handshake, on a kept worker goroutine
//	handoff.go   the hand-over to net/http: replayed bytes, a listener fed by a channel
//	hostless.go  Config.AddHost: Host lines for legacy Gazelle's heads, on handed-over connections
//	table.go     the connection budget's table: what to shed, what to refuse
//	budget.go    the Server's use of it, and its metrics
//	counters.go  connections, bytes and the longest head, for the site's stats report
package fast
