"""The run folder: its layout, checkpoint and meta (folder), its train/val/test split (splits) and the export
manifest (manifest)."""
