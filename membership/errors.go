package membership

import "errors"

// Sentinel errors returned (wrapped, with details) by this package. Compare
// with errors.Is; the wrapped message names the values involved.
var (
	// ErrInvalidConfig reports a Config that Start cannot use.
	ErrInvalidConfig = errors.New("membership: invalid config")

	// ErrJoinFailed reports that none of the seeds could be joined before
	// Config.JoinTimeout ran out (or the context was cancelled).
	ErrJoinFailed = errors.New("membership: join failed")

	// ErrForeignCluster is returned by the merge check when the peers of a
	// push/pull belong to another cluster than ours; two clusters never merge.
	ErrForeignCluster = errors.New("membership: member of another cluster")

	// ErrBadMeta reports node metadata that cannot be decoded.
	ErrBadMeta = errors.New("membership: bad node metadata")

	// ErrShutdown is returned by calls made after Shutdown.
	ErrShutdown = errors.New("membership: shut down")
)
