"""ms-swift plugin for medvlm: model families, med templates and losses."""
