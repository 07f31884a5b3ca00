// Package fedinterop tests federation against mautrix-go's federation code,
// a Matrix server-server implementation written by others (used by
// mautrix's bridges and bots that speak federation): a peer server built
// from it joins a room of ours, exchanges events with it in both
// directions and queries it, each side checking the other's signatures
// with its own code. mautrix's event (PDU) package needs Go's experimental
// encoding/json/v2, so the tests carry the fedinterop build tag and a plain
// `go test` reruns this package as a child with GOEXPERIMENT=jsonv2.
package fedinterop
