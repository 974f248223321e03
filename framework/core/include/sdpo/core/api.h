#pragma once
// SDPO_API marks classes shared across the host/plugin boundary with default visibility, so
// their type_info and vtables have one identity in every library (plugins build with hidden
// visibility): `catch (const sdpo::Error&)` in the host catches a throw from a plugin.

#include <boost/config.hpp>

#define SDPO_API BOOST_SYMBOL_VISIBLE
