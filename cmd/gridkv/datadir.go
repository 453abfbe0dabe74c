package main

import (
	"errors"

	"github.com/feellmoose/gridkv"
)

// applyDataDir sets the directory the node keeps its Raft state in.
//
// This build's store.StorageOptions has no DataDir yet (it arrives with the durability
// work): until then a node program asked for one refuses to start rather than run memory
// only while the operator believes it durable. At that merge the body becomes:
//
//	if dir == "" {
//		return nil
//	}
//	if opts.Storage == nil {
//		opts.Storage = &store.StorageOptions{}
//	}
//	opts.Storage.DataDir = dir
//	return nil
func applyDataDir(opts *gridkv.GridKVOptions, dir string) error {
	if dir == "" {
		return nil
	}
	return errors.New("-data-dir: not supported by this build (store.StorageOptions has no DataDir yet): nodes keep data in memory only")
}
