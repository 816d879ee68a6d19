// Command chihaya runs the Chihaya BitTorrent tracker with the built-in drivers.
//
//	chihaya -config /etc/chihaya.json
//
// Without -config it runs on the embedded example_config.json: a public tracker on :6881.
package main

import "github.com/chihaya/chihaya"

func main() {
	chihaya.Boot()
}
