package main

import (
	"fmt"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/store"
)

// applyDataDir sets the directory the node keeps its Raft state in, and when its log writes
// reach the disk (-sync: always, the default, or none).
func applyDataDir(opts *gridkv.GridKVOptions, dir, sync string) error {
	var mode store.SyncMode
	switch sync {
	case "", "always":
		mode = store.SyncAlways
	case "none":
		mode = store.SyncNone
	default:
		return fmt.Errorf("-sync %q: want always or none", sync)
	}
	if dir == "" {
		if mode != store.SyncAlways {
			return fmt.Errorf("-sync %s needs -data-dir", sync)
		}
		return nil
	}
	if opts.Storage == nil {
		opts.Storage = &store.StorageOptions{}
	}
	opts.Storage.DataDir, opts.Storage.Sync = dir, mode
	return nil
}
