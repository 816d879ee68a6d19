// Package models holds the plain values that flow between Chihaya's frontends, its transport-free
// core and its drivers: announces, scrapes, peers, torrents, users and the deltas handed to a
// backend. The types carry data only; the behaviour that acts on them lives in package tracker.
package models

import (
	"bytes"
	"net/netip"
	"time"
)

// InfoHash is the 20-byte SHA-1 of a torrent's bencoded info dictionary (BEP 3), or the first 20
// bytes of its SHA-256 for v2 torrents (BEP 52). It is compared as raw bytes, never as text.
type InfoHash [20]byte

// PeerID is the 20 bytes a client chooses to name itself in a swarm. It may be binary.
type PeerID [20]byte

// Admitted reports whether a client whitelist of peer ID prefixes admits id: whether id starts
// with one of the prefixes. An empty whitelist admits every client.
func (id *PeerID) Admitted(whitelist [][]byte) bool {
	if len(whitelist) == 0 {
		return true
	}
	for _, prefix := range whitelist {
		if bytes.HasPrefix(id[:], prefix) {
			return true
		}
	}
	return false
}

// Family is the address family of a peer's endpoint.
type Family uint8

// The address families a peer can announce over.
const (
	IPv4 Family = iota
	IPv6
)

// String returns "ipv4" or "ipv6".
func (f Family) String() string {
	if f == IPv6 {
		return "ipv6"
	}
	return "ipv4"
}

// FamilyOf returns the family of addr; an IPv4-mapped IPv6 address counts as IPv4.
func FamilyOf(addr netip.Addr) Family {
	if addr.Is4() || addr.Is4In6() {
		return IPv4
	}
	return IPv6
}

// PeerKey identifies one endpoint of a peer inside a swarm. A dual-stacked client that announces
// over IPv4 and over IPv6 with the same peer ID owns two keys that differ only in Family, so
// neither announce overwrites the other (BEP 7).
type PeerKey struct {
	ID     PeerID
	Family Family
	// User is the site's user ID in private mode, where the same peer ID under two users is two
	// peers (as in Ocelot); zero in public mode.
	User uint32
}

// Event is the announce event a client reports (BEP 3, BEP 21).
type Event uint8

// The announce events. None is a regular, periodic announce.
const (
	None Event = iota
	Started
	Completed
	Stopped
	Paused
)

// String returns the event's name as it appears in an HTTP announce ("" for None).
func (e Event) String() string {
	switch e {
	case Started:
		return "started"
	case Completed:
		return "completed"
	case Stopped:
		return "stopped"
	case Paused:
		return "paused"
	}
	return ""
}

// Peer is one endpoint of a swarm member as handed out to other peers.
type Peer struct {
	ID       PeerID
	AddrPort netip.AddrPort
}

// Announce is one parsed announce request, independent of the transport that carried it.
type Announce struct {
	InfoHash InfoHash
	PeerID   PeerID
	// Passkey is the first path segment of /:passkey/announce, or "" on /announce.
	Passkey string
	// UserAgent is the client's User-Agent header, kept for the site (xbt_files_users).
	UserAgent string
	// Endpoint is the address and port the peer is reachable at for its own family: the socket's
	// address unless the configuration allows a client or a trusted proxy to say otherwise.
	Endpoint netip.AddrPort
	// Other, when valid, is the peer's endpoint in the other address family (BEP 7 ipv4=/ipv6=),
	// present only where the configuration allows IP spoofing.
	Other netip.AddrPort
	// Remote is the address the request came from as the tracker sees it (the socket, or a
	// trusted proxy's header); it is echoed back as BEP 24 "external ip".
	Remote netip.Addr

	Event      Event
	Uploaded   int64
	Downloaded int64
	Left       int64
	Corrupt    int64
	// NumWant is the number of peers asked for; -1 means "the tracker's default".
	NumWant int
	// Compact asks for BEP 23 compact peer strings; NoPeerID leaves "peer id" out of dict peers.
	Compact  bool
	NoPeerID bool
	// CompactOne is set when the client asked for compact peers in so many words: compact=1
	// over HTTP (a missing compact gets compact peers all the same), and always over UDP.
	// compact_only admits only these, as Ocelot does.
	CompactOne bool
	// WebRTC marks a WebSocket (WebTorrent) peer: it has no address and port to hand out, so it
	// is stored hidden (counted in the swarm, never handed to anyone) and is handed no peers;
	// its frontend relays WebRTC offers instead. Endpoint is the socket's address with port 0.
	WebRTC bool
}

// Seeder reports whether the announcing peer has the whole torrent.
func (a *Announce) Seeder() bool { return a.Left == 0 }

// AnnounceResponse is the core's answer to an announce. The peer slices are scratch buffers that
// the core owns and reuses: a writer must not keep them after it returns.
type AnnounceResponse struct {
	Complete    int
	Incomplete  int
	Downloaded  int
	Interval    time.Duration
	MinInterval time.Duration
	IPv4Peers   []Peer
	IPv6Peers   []Peer
	// ExternalIP is the requester's address as seen by the tracker (BEP 24); invalid to omit it.
	ExternalIP netip.Addr
	Compact    bool
	NoPeerID   bool
}

// Scrape is one parsed scrape request.
type Scrape struct {
	Passkey    string
	InfoHashes []InfoHash
}

// TorrentStats are the swarm counts of one torrent as a scrape reports them.
type TorrentStats struct {
	InfoHash InfoHash
	// ID is the site's torrent ID in private mode, zero in public mode.
	ID         uint64
	Seeders    int
	Leechers   int
	Snatches   int
	Registered bool
}

// ScrapeResponse is the core's answer to a scrape, one entry per requested info hash in request
// order. The slice is owned by the core and reused after the writer returns.
type ScrapeResponse struct {
	Files []TorrentStats
}

// Torrent is a torrent as a backend or a private-mode driver knows it.
type Torrent struct {
	ID        uint64
	InfoHash  InfoHash
	Seeders   int
	Leechers  int
	Snatches  int
	Freeleech FreeleechType
}

// User is a private tracker's account as the tracker needs it.
type User struct {
	ID       uint64
	Passkey  string
	CanLeech bool
	// Protected users are handed out to peers as usual, but their address is not written to
	// the site's database (Gazelle: Visible='0' or IP='127.0.0.1').
	Protected bool
}

// AnnounceDelta is what one announce changed, as the core hands it to the backend after the
// swarm was updated. It is valid only during the backend call; a backend copies what it keeps.
type AnnounceDelta struct {
	InfoHash InfoHash
	PeerID   PeerID
	Passkey  string
	// UserID and TorrentID are the site's IDs in private mode; zero in public mode.
	UserID    uint64
	TorrentID uint64
	Endpoint  netip.AddrPort
	// Protected users' addresses are not to be written to the site's database.
	Protected bool
	UserAgent string
	Event     Event
	// Created is true when this announce added the peer to the swarm.
	Created bool
	// Snatched is true when this announce counted a completed download.
	Snatched bool
	// Removed is true when the announce was a stop (event stopped): the peer is not in the
	// swarm afterwards, whether or not it was before, so its row is inactive (a stop from a
	// peer never seen is written with active 0, as Ocelot writes it).
	Removed bool
	Seeder  bool
	// Token is true when a freeleech token of the user's applies to this announce: the user holds
	// one for the torrent and the torrent is not neutral (neutral wins over tokens).
	Token bool
	Left  int64

	// Uploaded, Downloaded and Corrupt are the client's session totals as it reported them.
	Uploaded   int64
	Downloaded int64
	Corrupt    int64
	// UploadedDelta, DownloadedDelta and CorruptDelta are the raw bytes since the peer's
	// previous announce: zero on a new baseline (first announce, started, a counter that went
	// down), never negative. CorruptDelta is kept in private mode only.
	UploadedDelta   int64
	DownloadedDelta int64
	CorruptDelta    int64
	// CreditedUp and CreditedDown are the deltas after the freeleech rules: what the user's
	// upload and download totals grow by.
	CreditedUp   int64
	CreditedDown int64
	// TokenDown is the download a freeleech token made free (users_freeleeches.Downloaded).
	TokenDown int64
	// UpSpeed and DownSpeed are the deltas over the time since the previous announce, in
	// bytes per second.
	UpSpeed   int64
	DownSpeed int64

	// Seeders, Leechers and Snatches are the torrent's counts after the announce.
	Seeders  int
	Leechers int
	Snatches int

	// FirstSeen is when the peer's session began and Announces how many announces it made,
	// this one included. Public mode keeps no sessions: there they are now and 1.
	FirstSeen time.Time
	Announces int
	Time      time.Time
}

// SwarmCounts are the sizes of all swarms a tracker driver holds, peers split by address
// family (indexed by Family).
type SwarmCounts struct {
	Torrents int
	Seeders  [2]int
	Leechers [2]int
}
