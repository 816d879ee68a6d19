package ws

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/tracker/models"
)

// oracle reads msg with encoding/json into what parse must make of it: the error parse must
// return, and otherwise every field. It is the specification of parse, written with the standard
// library (keys match exactly, as in JavaScript: encoding/json alone would match them in any
// case).
func oracle(msg []byte, maxOffers int) (request, error) {
	var r request
	if !utf8.Valid(msg) {
		return r, errNotUTF8
	}
	if !json.Valid(msg) {
		return r, errNotJSON
	}
	var top any
	if err := json.Unmarshal(msg, &top); err != nil {
		return r, err
	}
	if top == nil {
		return r, nil // null
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(msg, &fields) != nil {
		return r, errNotJSON // not an object
	}
	for key, dst := range map[string]*[]byte{"action": &r.Action, "info_hash": &r.InfoHash, "peer_id": &r.PeerID,
		"to_peer_id": &r.ToPeerID, "offer_id": &r.OfferID, "event": &r.Event, "uploaded": &r.Uploaded,
		"downloaded": &r.Downloaded, "left": &r.Left, "answer": &r.Answer} {
		if v, ok := fields[key]; ok {
			*dst = v
		}
	}
	if a := r.Action; a != nil && a[0] != '"' && string(a) != "null" {
		return request{}, errNotJSON
	}
	if raw, ok := fields["offers"]; ok && string(raw) != "null" {
		var list []json.RawMessage
		if json.Unmarshal(raw, &list) != nil {
			return request{}, errNotJSON
		}
		for _, el := range list {
			var o offer
			if string(el) != "null" {
				var of map[string]json.RawMessage
				if json.Unmarshal(el, &of) != nil {
					return request{}, errNotJSON
				}
				o.Offer, o.OfferID = of["offer"], of["offer_id"]
			}
			if r.NumOffers < maxOffers {
				r.Offers = append(r.Offers, o)
			}
			r.NumOffers++
		}
	}
	return r, nil
}

// binaryOracle is decodeBinary with encoding/json: 20 characters, none above U+00FF.
func binaryOracle(raw []byte) ([20]byte, bool) {
	var out [20]byte
	var s string
	if json.Unmarshal(raw, &s) != nil || utf8.RuneCountInString(s) != 20 {
		return out, false
	}
	n := 0
	for _, c := range s {
		if c > 0xFF {
			return out, false
		}
		out[n] = byte(c)
		n++
	}
	return out, true
}

// numberOracle is number with encoding/json and strconv.
func numberOracle(raw []byte) (int64, bool) {
	if !present(raw) {
		return 0, false
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return 0, false
		}
		raw = []byte(s)
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsNaN(f) || f < 0 {
		return 0, false
	}
	if f >= math.MaxInt64 {
		return math.MaxInt64, true
	}
	return int64(f), true
}

// eventOracle is event with encoding/json.
func eventOracle(raw []byte) (models.Event, bool) {
	if !present(raw) {
		return models.None, true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return 0, false
	}
	switch s {
	case "", "update":
		return models.None, true
	case "started":
		return models.Started, true
	case "stopped":
		return models.Stopped, true
	case "completed":
		return models.Completed, true
	case "paused":
		return models.Paused, true
	}
	return 0, false
}

// checkParse checks parse against the oracle on msg, and what the tracker reads of the fields
// against theirs; it returns parse's request.
func checkParse(t *testing.T, msg []byte, maxOffers int) (request, error) {
	t.Helper()
	var rq request
	err := rq.parse(msg, maxOffers)
	want, werr := oracle(msg, maxOffers)
	require.Equal(t, werr, err, "%q", msg)
	if err != nil {
		return rq, err
	}
	for _, f := range []struct {
		name      string
		got, want []byte
	}{
		{"action", rq.Action, want.Action}, {"info_hash", rq.InfoHash, want.InfoHash}, {"peer_id", rq.PeerID, want.PeerID},
		{"to_peer_id", rq.ToPeerID, want.ToPeerID}, {"offer_id", rq.OfferID, want.OfferID}, {"event", rq.Event, want.Event},
		{"uploaded", rq.Uploaded, want.Uploaded}, {"downloaded", rq.Downloaded, want.Downloaded},
		{"left", rq.Left, want.Left}, {"answer", rq.Answer, want.Answer},
	} {
		require.Equal(t, string(f.want), string(f.got), "%s of %q", f.name, msg)
	}
	require.Equal(t, want.NumOffers, rq.NumOffers, "%q", msg)
	require.Len(t, rq.Offers, len(want.Offers), "%q", msg)
	for i, o := range want.Offers {
		require.Equal(t, string(o.Offer), string(rq.Offers[i].Offer), "offer %d of %q", i, msg)
		require.Equal(t, string(o.OfferID), string(rq.Offers[i].OfferID), "offer_id %d of %q", i, msg)
	}
	for _, raw := range [][]byte{rq.InfoHash, rq.PeerID, rq.ToPeerID, rq.OfferID} {
		var got [20]byte
		ok := decodeBinary(raw, &got)
		wantB, wok := binaryOracle(raw)
		require.Equal(t, wok, ok, "binary %q", raw)
		if ok {
			require.Equal(t, wantB, got, "binary %q", raw)
		}
	}
	for _, raw := range [][]byte{rq.Uploaded, rq.Downloaded, rq.Left, rq.InfoHash} {
		n, ok := number(raw)
		wn, wok := numberOracle(raw)
		require.Equal(t, wok, ok, "number %q", raw)
		require.Equal(t, wn, n, "number %q", raw)
	}
	ev, ok := event(rq.Event)
	wev, wok := eventOracle(rq.Event)
	require.Equal(t, wok, ok, "event %q", rq.Event)
	require.Equal(t, wev, ev, "event %q", rq.Event)
	var s string
	if json.Unmarshal(rq.Action, &s) == nil && (s == "announce" || s == "scrape") {
		require.Equal(t, s, action(rq.Action))
	} else {
		require.NotContains(t, []string{"announce", "scrape"}, action(rq.Action), "action %q", rq.Action)
	}
	if rq.InfoHash != nil && rq.InfoHash[0] == '[' {
		var list []json.RawMessage
		require.NoError(t, json.Unmarshal(rq.InfoHash, &list))
		var got []string
		n := elements(rq.InfoHash, func(raw []byte) { got = append(got, string(raw)) })
		require.Equal(t, len(list), n)
		for i := range list {
			require.Equal(t, string(list[i]), got[i])
		}
	}
	var ih models.InfoHash
	var id models.PeerID
	for _, o := range rq.Offers {
		out := appendRelay(nil, &ih, &id, "offer", o.Offer, o.OfferID)
		require.True(t, json.Valid(out), "%s", out)
		require.True(t, utf8.Valid(out), "%s", out)
	}
	return rq, nil
}

func TestParse(t *testing.T) {
	ih := `"abcdefghijklmnopqrst"`
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	tests := []struct {
		name string
		msg  string
		err  error
		// what is checked besides the oracle's fields
		check func(t *testing.T, rq *request)
	}{
		{name: "announce", msg: `{"action":"announce","info_hash":` + ih + `,"peer_id":` + ih + `,"left":null,"offers":[{"offer":{"type":"offer","sdp":"x"},"offer_id":"o"}]}`,
			check: func(t *testing.T, rq *request) {
				assert.Equal(t, "announce", action(rq.Action))
				assert.Equal(t, `{"type":"offer","sdp":"x"}`, string(rq.Offers[0].Offer))
				assert.Equal(t, "null", string(rq.Left))
			}},
		{name: "whitespace everywhere", msg: " \t\r\n{ \"action\" : \"scrape\" ,\n\"info_hash\" :\t[ " + ih + " , " + ih + " ] } \n",
			check: func(t *testing.T, rq *request) { assert.Equal(t, "scrape", action(rq.Action)) }},
		{name: "escaped key and action", msg: `{"\u0061ction":"\u0061nnounce","info\u005fhash":"\u0000bcdefghijklmnopqrs\u00ff"}`,
			check: func(t *testing.T, rq *request) {
				assert.Equal(t, "announce", action(rq.Action))
				var b [20]byte
				require.True(t, decodeBinary(rq.InfoHash, &b))
				assert.Equal(t, byte(0), b[0])
				assert.Equal(t, byte(0xff), b[19])
			}},
		{name: "the last of a repeated key counts", msg: `{"action":"scrape","action":"announce","offers":[{}, {}],"offers":[null]}`,
			check: func(t *testing.T, rq *request) {
				assert.Equal(t, "announce", action(rq.Action))
				assert.Equal(t, 1, rq.NumOffers)
			}},
		{name: "keys match in their case only", msg: `{"Action":"announce","INFO_HASH":` + ih + `}`,
			check: func(t *testing.T, rq *request) { assert.Nil(t, rq.Action) }},
		{name: "offers past the limit are counted", msg: `{"offers":[{"offer":1},{"offer":2},{"offer":3},{"offer":4}]}`,
			check: func(t *testing.T, rq *request) {
				assert.Equal(t, 4, rq.NumOffers)
				assert.Len(t, rq.Offers, 3)
			}},
		{name: "null", msg: ` null `},
		{name: "empty object", msg: `{}`},
		{name: "unknown members of any kind", msg: `{"x":{"y":[1,-2.5e+3,true,false,null,"\"\\\/\b\f\n\r\t\u12aB"]},"z":[]}`},
		{name: "nesting at the limit", msg: `{"x":` + deep(maxDepth-1) + `}`},
		{name: "nesting past the limit", msg: `{"x":` + deep(maxDepth) + `}`, err: errNotJSON},
		{name: "deep nesting in an offer", msg: `{"offers":[{"offer":` + deep(200) + `}]}`},
		{name: "not UTF-8", msg: "{\"x\":\"\xff\"}", err: errNotUTF8},
		{name: "a list", msg: `[]`, err: errNotJSON},
		{name: "a string", msg: `"announce"`, err: errNotJSON},
		{name: "empty", msg: ``, err: errNotJSON},
		{name: "trailing text", msg: `{} {}`, err: errNotJSON},
		{name: "unterminated", msg: `{"action":"announce"`, err: errNotJSON},
		{name: "trailing comma", msg: `{"action":"announce",}`, err: errNotJSON},
		{name: "trailing comma in a list", msg: `{"x":[1,]}`, err: errNotJSON},
		{name: "single quotes", msg: `{'action':'announce'}`, err: errNotJSON},
		{name: "control character in a string", msg: "{\"x\":\"a\tb\"}", err: errNotJSON},
		{name: "bad escape", msg: `{"x":"\a"}`, err: errNotJSON},
		{name: "short unicode escape", msg: `{"x":"\u12"}`, err: errNotJSON},
		{name: "leading zero", msg: `{"x":01}`, err: errNotJSON},
		{name: "bare minus", msg: `{"x":-}`, err: errNotJSON},
		{name: "dot without digits", msg: `{"x":1.}`, err: errNotJSON},
		{name: "exponent without digits", msg: `{"x":1e+}`, err: errNotJSON},
		{name: "NaN", msg: `{"x":NaN}`, err: errNotJSON},
		{name: "action a number", msg: `{"action":5}`, err: errNotJSON},
		{name: "action a list", msg: `{"action":["announce"]}`, err: errNotJSON},
		{name: "offers a string", msg: `{"offers":"x"}`, err: errNotJSON},
		{name: "an offer a number", msg: `{"offers":[5]}`, err: errNotJSON},
		{name: "missing colon", msg: `{"action" "announce"}`, err: errNotJSON},
		{name: "key not a string", msg: `{action:"announce"}`, err: errNotJSON},
		{name: "truncated literal", msg: `{"left":nul}`, err: errNotJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rq, err := checkParse(t, []byte(tt.msg), 3)
			require.Equal(t, tt.err, err)
			if tt.check != nil {
				tt.check(t, &rq)
			}
		})
	}
}

// TestParseReusesRoom: a request parses message after message into the same room for offers,
// and keeps nothing of one message in the next.
func TestParseReusesRoom(t *testing.T) {
	var rq request
	require.NoError(t, rq.parse([]byte(`{"action":"announce","left":5,"offers":[{"offer":1,"offer_id":2},{"offer":3,"offer_id":4}]}`), 10))
	require.Len(t, rq.Offers, 2)
	require.NoError(t, rq.parse([]byte(`{"offers":[{"offer":5}]}`), 10))
	assert.Nil(t, rq.Action)
	assert.Nil(t, rq.Left)
	require.Len(t, rq.Offers, 1)
	assert.Nil(t, rq.Offers[0].OfferID)
	assert.Nil(t, rq.Offers[:2][1].Offer, "a stale offer left in the room")
	require.Error(t, rq.parse([]byte(`{"offers":[{"offer":5}]`), 10))
	assert.Empty(t, rq.Offers)
	assert.Zero(t, rq.NumOffers)
}

func TestEvent(t *testing.T) {
	tests := []struct {
		raw  string
		want models.Event
		ok   bool
	}{
		{``, models.None, true}, {`null`, models.None, true}, {`""`, models.None, true}, {`"update"`, models.None, true},
		{`"started"`, models.Started, true}, {`"stopped"`, models.Stopped, true}, {`"completed"`, models.Completed, true},
		{`"paused"`, models.Paused, true}, {`"\u0073topped"`, models.Stopped, true}, {`"Started"`, 0, false},
		{`"finished"`, 0, false}, {`1`, 0, false}, {`["started"]`, 0, false},
	}
	for _, tt := range tests {
		got, ok := event([]byte(tt.raw))
		assert.Equal(t, tt.ok, ok, tt.raw)
		assert.Equal(t, tt.want, got, tt.raw)
	}
}

func TestAppendString(t *testing.T) {
	for _, s := range []string{"", "plain", "Unregistered torrent: <b>\"x\"</b> & \\ \n\t\b\f\r\x01\x7f", "é – 漢 \u2028\u2029 🙂", "bad \xff\xfe utf-8 \xe2\x82"} {
		want, err := json.Marshal(s)
		require.NoError(t, err)
		assert.Equal(t, string(want), string(appendString(nil, s)), "%q", s)
	}
}

// FuzzParse: parse makes of every message what encoding/json does (the oracle): the same error,
// or the same raw fields; binary, number and event read those fields as encoding/json would; no
// message panics any of them, and relayed offers are valid UTF-8 JSON. The seed corpus is in
// testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, msg []byte) {
		_, _ = checkParse(t, msg, 3)
	})
}

// FuzzBinary: binary reads every raw JSON string as encoding/json does.
func FuzzBinary(f *testing.F) {
	for _, seed := range []string{`"abcdefghijklmnopqrst"`, `"\u0000bcdefghijklmnopqr\u00ff"`, `"ééééééééééééééééééé\/"`, `"\ud83d\ude00bcdefghijklmnopqrs"`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !utf8.Valid(raw) || !json.Valid(raw) || !bytes.HasPrefix(raw, []byte(`"`)) {
			return
		}
		var got [20]byte
		ok := decodeBinary(raw, &got)
		want, wok := binaryOracle(raw)
		require.Equal(t, wok, ok, "%q", raw)
		if ok {
			require.Equal(t, want, got)
		}
	})
}

// TestParseAllocs: a warm request parses an announce with offers and reads its fields without
// allocating.
func TestParseAllocs(t *testing.T) {
	msg := announceMessage('a', 5, 500)
	var rq request
	require.NoError(t, rq.parse(msg, 82))
	allocs := testing.AllocsPerRun(100, func() {
		if rq.parse(msg, 82) != nil {
			panic("parse")
		}
		var b [20]byte
		decodeBinary(rq.InfoHash, &b)
		decodeBinary(rq.PeerID, &b)
		number(rq.Uploaded)
		number(rq.Left)
		event(rq.Event)
		action(rq.Action)
	})
	assert.Zero(t, allocs)
}

// announceMessage is an announce as WebTorrent sends it, from the peer whose ID ends in peer,
// with n offers of sdp bytes of SDP.
func announceMessage(peer byte, n, sdp int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"action":"announce","info_hash":"\u0012Ã©abcdefghijklmnopq","peer_id":"-WW0208-abcdefghijk` + string(rune(peer)) +
		`","numwant":5,"uploaded":0,"downloaded":12345,"left":1048576,"event":"started","offers":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"offer":{"type":"offer","sdp":"v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n` + strings.Repeat("a", sdp) + `"},"offer_id":"abcdefghijklmnopqrs` + strconv.Itoa(i) + `"}`)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

func BenchmarkParse(b *testing.B) {
	msg := announceMessage('a', 5, 500)
	var rq request
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if rq.parse(msg, 82) != nil {
			b.Fatal("parse")
		}
	}
}

// BenchmarkParseEncodingJSON is what parse replaced, for comparison.
func BenchmarkParseEncodingJSON(b *testing.B) {
	msg := announceMessage('a', 5, 500)
	var rq struct {
		Action, InfoHash, PeerID, Event, Uploaded, Downloaded, Left json.RawMessage
		Offers                                                      []struct{ Offer, OfferID json.RawMessage }
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if !utf8.Valid(msg) || json.Unmarshal(msg, &rq) != nil {
			b.Fatal("parse")
		}
	}
}
