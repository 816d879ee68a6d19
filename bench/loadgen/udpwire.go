package loadgen

import "encoding/binary"

// BEP 15 constants.
const (
	udpProtocolID = 0x41727101980

	ActionConnect  = 0
	ActionAnnounce = 1
	ActionScrape   = 2
	ActionError    = 3

	// UDP announce events.
	EventNone      = 0
	EventCompleted = 1
	EventStarted   = 2
	EventStopped   = 3
)

// UDPAnnounce is one UDP announce.
type UDPAnnounce struct {
	ConnID   uint64
	TxID     uint32
	InfoHash [20]byte
	PeerID   [20]byte
	Left     int64
	Event    uint32
	Key      uint32
	NumWant  int32
	Port     uint16
}

// AppendUDPConnect appends a 16-byte connect request.
func AppendUDPConnect(dst []byte, txID uint32) []byte {
	dst = binary.BigEndian.AppendUint64(dst, udpProtocolID)
	dst = binary.BigEndian.AppendUint32(dst, ActionConnect)
	return binary.BigEndian.AppendUint32(dst, txID)
}

// AppendUDPAnnounce appends a 98-byte announce request (IP 0: the source address is used).
func AppendUDPAnnounce(dst []byte, a *UDPAnnounce) []byte {
	dst = binary.BigEndian.AppendUint64(dst, a.ConnID)
	dst = binary.BigEndian.AppendUint32(dst, ActionAnnounce)
	dst = binary.BigEndian.AppendUint32(dst, a.TxID)
	dst = append(dst, a.InfoHash[:]...)
	dst = append(dst, a.PeerID[:]...)
	dst = binary.BigEndian.AppendUint64(dst, 0) // downloaded
	dst = binary.BigEndian.AppendUint64(dst, uint64(a.Left))
	dst = binary.BigEndian.AppendUint64(dst, 0) // uploaded
	dst = binary.BigEndian.AppendUint32(dst, a.Event)
	dst = binary.BigEndian.AppendUint32(dst, 0) // IP
	dst = binary.BigEndian.AppendUint32(dst, a.Key)
	dst = binary.BigEndian.AppendUint32(dst, uint32(a.NumWant))
	return binary.BigEndian.AppendUint16(dst, a.Port)
}

// AppendUDPScrape appends a scrape request for hashes.
func AppendUDPScrape(dst []byte, connID uint64, txID uint32, hashes [][20]byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, connID)
	dst = binary.BigEndian.AppendUint32(dst, ActionScrape)
	dst = binary.BigEndian.AppendUint32(dst, txID)
	for i := range hashes {
		dst = append(dst, hashes[i][:]...)
	}
	return dst
}

// UDPHeader returns the action and transaction ID of an answer, or ok false when the packet is
// too short to hold them.
func UDPHeader(p []byte) (action, txID uint32, ok bool) {
	if len(p) < 8 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint32(p), binary.BigEndian.Uint32(p[4:]), true
}

// CheckUDP judges an answer to a request of action want with nHashes hashes (scrapes only),
// once its transaction ID has been matched. An error packet is a Failure; a packet of the wrong
// action or shape is Malformed. For a connect answer it also returns the connection ID.
func CheckUDP(p []byte, want uint32, nHashes int) (Verdict, uint64) {
	action, _, ok := UDPHeader(p)
	if !ok {
		return Malformed, 0
	}
	if action == ActionError {
		return Failure, 0
	}
	if action != want {
		return Malformed, 0
	}
	switch want {
	case ActionConnect:
		if len(p) != 16 {
			return Malformed, 0
		}
		return OK, binary.BigEndian.Uint64(p[8:])
	case ActionAnnounce:
		if len(p) < 20 || (len(p)-20)%6 != 0 {
			return Malformed, 0
		}
	case ActionScrape:
		if len(p) != 8+12*nHashes {
			return Malformed, 0
		}
	default:
		return Malformed, 0
	}
	return OK, 0
}

// ScrapeCounts returns seeders, completed and leechers of hash i in a scrape answer that
// CheckUDP accepted.
func ScrapeCounts(p []byte, i int) (seeders, completed, leechers uint32) {
	o := 8 + 12*i
	return binary.BigEndian.Uint32(p[o:]), binary.BigEndian.Uint32(p[o+4:]), binary.BigEndian.Uint32(p[o+8:])
}
