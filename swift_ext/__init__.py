"""ms-swift plugin for medvlm: model families, tiny offline checkpoints, med templates and losses."""
