"""Files on disk: safe image reading, the project folder, VOC export/import (no Qt, no torch)."""
