"""The corpus: its layout, where it comes from (download, folder, synth), its manifest and checks."""
