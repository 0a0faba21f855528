"""Class masks as polygons: what a GIS user opens (GeoPackage or GeoJSON, in the raster's CRS).

GDAL's polygonizer (``rasterio.features.shapes`` on the mask file's band, which it reads itself) traces each
4-connected region of one class into a polygon with holes, in map coordinates through the raster's transform (rotated
transforms included); nodata regions give none. Polygons smaller than ``min_area`` (CRS units², before
simplification) are dropped, and ``tolerance`` simplifies the rest (Douglas-Peucker, topology preserved, shapely).
pyogrio (GDAL's OGR) writes them with their ``class`` index and ``name``. All three come with the ``geo`` extra.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from fcnseg.core.io import atomic_path
from fcnseg.data.errors import DataError
from fcnseg.data.raster import GEO_EXTRA, require_rasterio

__all__ = ["write_polygons"]

logger = logging.getLogger(__name__)

DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON"}


def write_polygons(mask_path: str | Path, out: str | Path, *, min_area: float = 0.0, tolerance: float = 0.0) -> int:
    """Polygonize the class-index GeoTIFF ``mask_path`` (as :func:`~fcnseg.inference.raster.predict_raster` writes
    it) into ``out`` (``.gpkg``, ``.geojson``), atomically.

    Returns:
        The number of polygons written.

    Raises:
        DataError: ``out`` has another suffix, or pyogrio/shapely are missing (one line naming the extra).
    """
    out = Path(out)
    driver = DRIVERS.get(out.suffix.lower())
    if driver is None:
        raise DataError(f"--vector {out}: use a .gpkg or .geojson file name")
    rasterio = require_rasterio("writing polygons")
    try:
        import pyogrio.raw
        import shapely
        from shapely.geometry import shape
    except ImportError:
        raise DataError(f"writing polygons needs pyogrio and shapely, which are not installed: {GEO_EXTRA}") from None
    from rasterio.features import shapes

    with rasterio.open(mask_path) as ds:
        names = json.loads(ds.tags().get("CLASS_NAMES", "[]"))
        nodata, crs = ds.nodata, ds.crs
        geometries, classes = [], []
        for geometry, value in shapes(rasterio.band(ds, 1), transform=ds.transform):
            if value == nodata:
                continue
            polygon = shape(geometry)
            if polygon.area < min_area:
                continue
            if tolerance > 0:
                polygon = polygon.simplify(tolerance, preserve_topology=True)
            geometries.append(polygon)
            classes.append(int(value))
    labels = np.array(classes, dtype=np.int32)
    class_names = np.array([names[c] if c < len(names) else str(c) for c in classes], dtype=object)
    with atomic_path(out) as tmp:
        tmp.unlink()  # OGR creates the file
        pyogrio.raw.write(
            tmp,
            shapely.to_wkb(np.array(geometries, dtype=object)),
            [labels, class_names],
            ["class", "name"],
            geometry_type="Polygon",
            crs=crs.to_wkt() if crs else None,
            driver=driver,
            layer=out.stem,
        )
    logger.info("wrote %d polygons to %s", len(geometries), out)
    return len(geometries)
