#!/usr/bin/env bash
# Local (no GPU): builds the source overlays that .notes/hopmask_run.sh times on the device.
# Run in the checkout that holds s5-hopmask's gated quad-mask kernel (main after merging it, or
# /work/wt-hopmask): `bash .notes/hopmask_prep.sh`. Each overlay is a patched copy of
# src/cuda/fused/sm90 only (both session-5 patches touch nothing else); the device script
# compiles the bf16/128 hopper instance with the overlay's -I ahead of src/ and swaps that one
# object into a copy of libfna.a, so a variant costs one instance compile, not a library build.
#   p1  = .notes/hopper_s5_epilogue_8byte.patch   (8-byte epilogue stores)
#   p2  = .notes/hopper_s5_max_chains.patch       (4-chain row max)
#   p3  = .notes/hopper_s5_smem_lds.patch         (shared storage through LDS/STS, not generic)
#   all = p1 + p2 + p3 (tested, then timed with FNA_HOPPER_MASKS=table)
set -eu
R=$(git rev-parse --show-toplevel)
S=$R/.snap-hopmask
rm -rf "$S"
mkdir -p "$S"
tmp=$(mktemp -d)
for spec in p1:hopper_s5_epilogue_8byte p2:hopper_s5_max_chains p3:hopper_s5_smem_lds \
            all:hopper_s5_epilogue_8byte,hopper_s5_max_chains,hopper_s5_smem_lds; do
  name=${spec%%:*}
  mkdir -p "$tmp/$name/src/cuda/fused"
  cp -r "$R/src/cuda/fused/sm90" "$tmp/$name/src/cuda/fused/"
  for p in $(echo "${spec#*:}" | tr , ' '); do
    patch -s -p1 -d "$tmp/$name" < "$R/.notes/$p.patch"
  done
  mkdir -p "$S/$name/src/cuda/fused"
  cp -r "$tmp/$name/src/cuda/fused/sm90" "$S/$name/src/cuda/fused/"
done
rm -rf "$tmp"
cp "$R/.notes/hopmask_run.sh" "$S/run.sh"
echo "overlays in $S: $(ls "$S" | tr '\n' ' ')"
echo "device: run(command='bash .snap-hopmask/run.sh', carry=['.cutlass', '.snap-hopmask'])"
