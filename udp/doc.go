// Package udp is Chihaya's UDP frontend: the BitTorrent UDP tracker protocol (BEP 15) with the
// URLData option (BEP 41), over IPv4 and IPv6. It parses datagrams into the same models the
// HTTP frontend fills, runs them through the same transport-free core (tracker.HandleAnnounce,
// tracker.HandleScrape) and encodes the core's answers; no announce or scrape logic lives here.
//
// # Packets
//
// Every request starts with a 16-byte header: connection ID (or, in a connect, the protocol ID
// 0x41727101980), action and transaction ID. Actions are 0 connect, 1 announce, 2 scrape and
// 3 error. An announce answer carries 6-byte peers to an IPv4 client and 18-byte peers to an
// IPv6 one, by the address family of the datagram (an IPv4-mapped source on a dual-stack socket
// is IPv4), with leechers before seeders; a scrape answer has seeders, completed and leechers
// for each hash in request order, at most 74 hashes (what fits one 1500-byte datagram).
// Failures of the core are error packets (action 3) with the models.ClientError text; other
// errors are logged (rate-limited) and the client is told models.ErrInternal.
//
// # Connection IDs
//
// A connection ID keeps no state on the server: it is the first 8 bytes of AES-128 used as a
// CBC-MAC over one fixed-length 32-byte message (the client's IPv6 or IPv4-mapped address and
// the number of whole minutes since the Unix epoch), keyed with a random per-process secret. An
// ID is accepted in the minute it was issued and the next, so it lives 60 to 120 seconds (BEP
// 15: clients reuse an ID for one minute, servers accept it for two). IDs are compared in
// constant time; a restart, or another process, issues different IDs.
//
// An ID is bound to the address, not the port: libtorrent shares one cached ID among all the
// sockets of a process, and a NAT may rebind a client's port within an ID's life. Proof that
// the holder receives at the address is what the amplification rule below needs, and the port
// adds nothing to it.
//
// # No amplification
//
// Only a client that proved it receives at its source address (by echoing a connection ID) gets
// an answer larger than its request. A connect is answered with 16 bytes, at most its own
// size; a packet with a bad protocol ID, an unknown action or a bad or expired connection ID
// gets an error packet truncated to the request's length; a packet shorter than the 16-byte
// header gets nothing.
//
// # Private mode
//
// The passkey comes from the BEP 41 URLData of an announce, "/<passkey>/announce" (the path
// and query of udp://host:port/<passkey>/announce, which libtorrent and anacrolix send). BEP 41
// gives scrapes no options, so a UDP scrape cannot name a user: in private mode every UDP
// scrape is answered with an error packet, and clients scrape over HTTP.
//
// # Readers
//
// A Server reads each socket with a number of reader goroutines (udp_readers), each with its own
// buffers and scratch space, so that a warm reader allocates nothing per datagram. On Linux a
// reader moves up to udp_batch_size datagrams per system call with recvmmsg(2) and sendmmsg(2);
// elsewhere, or with udp_batch_size 1, it uses ReadMsgUDPAddrPort and WriteToUDPAddrPort.
package udp
