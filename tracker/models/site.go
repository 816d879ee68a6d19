package models

import "time"

// FreeleechType is how a torrent's transfer counts towards its users' ratios, as Gazelle's
// torrents.freetorrent enum and the update API's freetorrent parameter say it.
type FreeleechType uint8

// The freeleech types, numbered as Gazelle stores them ('0', '1', '2').
const (
	// Normal credits both upload and download.
	Normal FreeleechType = 0
	// Free credits upload only: download is free.
	Free FreeleechType = 1
	// Neutral credits neither upload nor download. It wins over a user's freeleech token.
	Neutral FreeleechType = 2
)

// Token is a user's personal freeleech token for one torrent: while it is held, the user's
// download on that torrent is not counted against them.
type Token struct {
	UserID    uint64
	TorrentID uint64
}

// SiteState is everything a private tracker loads from its site at startup (and on a reload):
// the enabled users, the registered torrents, the unexpired freeleech tokens and the client
// whitelist. It is handed over once and owned by the receiver.
type SiteState struct {
	Users    []User
	Torrents []Torrent
	Tokens   []Token
	// Whitelist holds the peer_id prefixes of the allowed clients. Empty means every client is
	// allowed.
	Whitelist []string
	// Baselines are the last counters of peers seen before a restart, so that their first
	// announce afterwards is credited from there rather than lost.
	Baselines []Baseline
}

// ByTorrent groups the state's freeleech tokens (as user IDs) and baselines by torrent ID, as
// a driver loading the state torrent by torrent needs them.
func (st *SiteState) ByTorrent() (tokens map[uint64][]uint32, baselines map[uint64][]Baseline) {
	tokens = make(map[uint64][]uint32)
	for _, tk := range st.Tokens {
		tokens[tk.TorrentID] = append(tokens[tk.TorrentID], uint32(tk.UserID))
	}
	baselines = make(map[uint64][]Baseline)
	for _, b := range st.Baselines {
		baselines[b.TorrentID] = append(baselines[b.TorrentID], b)
	}
	return tokens, baselines
}

// Baseline is what a private tracker remembers of a peer between announces, so that the next
// announce is credited only with what is new.
type Baseline struct {
	UserID     uint64
	TorrentID  uint64
	PeerID     PeerID
	Uploaded   int64
	Downloaded int64
	Corrupt    int64
	FirstSeen  time.Time
	LastSeen   time.Time
	Announces  int
}

// SiteAction is one kind of change the site makes to the tracker's users, torrents, tokens and
// whitelist (Gazelle's update API).
type SiteAction uint8

// The site actions. Their names are Gazelle's update actions.
const (
	AddUser SiteAction = iota + 1
	UpdateUser
	RemoveUser
	ChangePasskey
	AddTorrent
	UpdateTorrent
	DeleteTorrent
	AddToken
	RemoveToken
	AddWhitelist
	EditWhitelist
	RemoveWhitelist
)

// SiteUpdate is one change to the site state held by the tracker. Which fields count depends
// on Action:
//
//	AddUser          User (ID, Passkey, CanLeech, Protected)
//	UpdateUser       User.Passkey, User.CanLeech, User.Protected
//	RemoveUser       User.Passkey
//	ChangePasskey    User.Passkey (old), NewPasskey
//	AddTorrent       Torrent (ID, InfoHash, Freeleech)
//	UpdateTorrent    Torrent.InfoHash, Torrent.Freeleech
//	DeleteTorrent    Torrent.InfoHash, Reason ("" for none)
//	AddToken         Torrent.InfoHash, User.ID
//	RemoveToken      Torrent.InfoHash, User.ID
//	AddWhitelist     Prefix
//	EditWhitelist    Prefix (old), NewPrefix
//	RemoveWhitelist  Prefix
type SiteUpdate struct {
	Action     SiteAction
	User       User
	NewPasskey string
	Torrent    Torrent
	Reason     string
	Prefix     string
	NewPrefix  string
}
