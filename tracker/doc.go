// Package tracker is Chihaya's transport-free core: it turns a parsed announce or scrape into
// updates of swarm state through a Conn of the registered tracker driver, pushes what changed to
// the backend, and hands its answer to a writer that the frontend owns. It knows nothing of HTTP
// or UDP.
//
// Swarm storage is pluggable in the manner of database/sql: a driver package calls Register in
// its init, and Open picks the driver that the configuration names. The rules of the protocol
// (who is a seeder, when a download counts, how many peers a client may ask for, which peers it
// may be handed) live here; a driver stores and selects exactly what the core tells it to.
package tracker
