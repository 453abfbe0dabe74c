package ring

import (
	"math/bits"

	"github.com/cespare/xxhash/v2"
)

// PartitionOf maps a key to a partition in [0, partitions) using xxhash.
//
// The 64-bit hash is reduced with a multiply-shift instead of a modulo: it
// is cheaper than a division on the read path and, because it takes the
// high bits of the hash, just as uniform. It does not allocate.
//
// The mapping is part of the on-disk contract of a cluster (see the package
// caveats). It panics if partitions < 1: the partition count is validated
// when the cluster is configured, so a bad value here is a programming error.
func PartitionOf(key string, partitions int) int {
	if partitions < 1 {
		panic("ring: PartitionOf needs partitions >= 1")
	}
	hi, _ := bits.Mul64(xxhash.Sum64String(key), uint64(partitions))
	return int(hi)
}
