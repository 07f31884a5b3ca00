// Package cryptointerop tests end-to-end encryption against mautrix-go's real
// Olm/Megolm client code. mautrix's crypto needs libolm through cgo unless
// built with the goolm tag (pure Go), so the tests carry that tag, and a plain
// `go test` reruns this package as a child `go test -tags goolm`: no libolm
// is needed, and `go test ./...` still runs them.
package cryptointerop
