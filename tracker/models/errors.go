package models

// ClientError is a failure whose text is safe to show to a BitTorrent client: frontends put it
// in the "failure reason" of an HTTP answer or the message of a UDP error packet. Every text a
// client can see is declared here, so that operators and translators find them in one place.
type ClientError string

// Error returns the text shown to the client.
func (e ClientError) Error() string { return string(e) }

// The failures a client can be told about.
const (
	ErrMalformedRequest  = ClientError("malformed request")
	ErrMissingInfoHash   = ClientError("missing info_hash")
	ErrInvalidInfoHash   = ClientError("invalid info_hash")
	ErrMissingPeerID     = ClientError("No peer ID")
	ErrInvalidPeerID     = ClientError("Invalid peer ID")
	ErrMissingPort       = ClientError("missing port")
	ErrInvalidPort       = ClientError("invalid port")
	ErrInvalidNumber     = ClientError("invalid numeric parameter")
	ErrInvalidEvent      = ClientError("invalid event")
	ErrInvalidIP         = ClientError("invalid ip address")
	ErrTooManyInfoHashes = ClientError("too many info_hash values in one scrape")
	ErrTorrentNotFound   = ClientError("Unregistered torrent")
	ErrInternal          = ClientError("internal tracker error, try again later")
	ErrUnavailable       = ClientError("tracker temporarily unavailable")
	ErrRateLimited       = ClientError("too many requests from your address, slow down")
	// ErrTorrentLimit and ErrPeerLimit refuse an announce that would create a torrent or add
	// a peer past the driver's configured limit.
	ErrTorrentLimit = ClientError("tracker full: no new torrents are taken, try again later")
	ErrPeerLimit    = ClientError("tracker full: no new peers are taken, try again later")
	// ErrNotAuthorized refuses a torrent the access list does not allow (opentracker's and
	// aquatic's text).
	ErrNotAuthorized = ClientError("Requested download is not authorized for use with this tracker.")
)

// More failures a client can be told about, for missing or malformed announce parameters.
const (
	ErrMissingUploaded    = ClientError("missing uploaded")
	ErrMissingDownloaded  = ClientError("missing downloaded")
	ErrMissingLeft        = ClientError("missing left")
	ErrDuplicateParameter = ClientError("info_hash or peer_id given more than once")
	ErrNotFound           = ClientError("unknown path: announce to /announce or /<passkey>/announce")
)

// The failures of private mode, worded as Ocelot words them: Gazelle's users and staff know them.
const (
	ErrPasskeyNotFound      = ClientError("Passkey not found")
	ErrLeechingForbidden    = ClientError("Access denied, leeching forbidden")
	ErrCompactOnly          = ClientError("Your client does not support compact announces")
	ErrAuthentication       = ClientError("Authentication failure")
	ErrClientNotWhitelisted = ClientError("Your client is not on the whitelist")
)

// The report endpoint's failures in the Ocelot 2.x (JSON) format, worded as OPSnet's Ocelot
// words them.
const (
	ErrAnnounceKeyMissing  = ClientError("Announce key missing")
	ErrAnnounceKeyNotFound = ClientError("Announce key not found")
	ErrUnknownReport       = ClientError("unrecognized report query")
)

// The failures only the UDP frontend tells clients about. Their texts are short: an error
// packet to an unauthenticated request is cut to the request's length.
const (
	ErrBadConnectionID = ClientError("invalid connection ID")
	ErrBadProtocolID   = ClientError("invalid protocol ID")
	ErrUnknownAction   = ClientError("unknown action")
	// ErrPrivateScrape answers every UDP scrape in private mode: BEP 41 gives scrapes no
	// options, so a UDP scrape cannot carry a passkey.
	ErrPrivateScrape = ClientError("scrape over HTTP with your passkey: UDP scrapes carry none")
)
