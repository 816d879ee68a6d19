package models

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
}
